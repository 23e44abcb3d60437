"""Built-in trained-block architectures; importing registers them (see ``agents.base``)."""
from . import detectors, precoder, predictors  # noqa: F401
