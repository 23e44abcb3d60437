r"""Channel predictors behind the predictor protocol.

Every registered predictor maps a history of ``L`` channel samples to the next ``P``:

.. math::
    \left(\mathbf{H}[t-L+1], \dots, \mathbf{H}[t]\right) \mapsto
    \left(\hat{\mathbf{H}}[t+1], \dots, \hat{\mathbf{H}}[t+P]\right)

``h_hist [b, L, ...] -> h_future [b, P, ...]``; the samples are spaced uniformly in time and ``P``
is the constructor's ``horizon``. For the channel layout of :class:`linksim.ChannelSource` the
trailing dims are ``[K, M, F]`` (users, BS antennas, subcarriers).

- :mod:`~linksim.blocks.predictors.classical`: ``outdated`` (the last sample repeated), ``ar``
  (least-squares AR fitted per sample) and the ``genie`` reference.
- :mod:`~linksim.blocks.predictors.pad`: ``pad``, Prony prediction of the strongest angle-delay
  bins, per sample (LLM4CP's classical baseline).
- :mod:`~linksim.blocks.predictors.wiener`: ``wiener``, one fixed linear MMSE filter fitted on the
  second-order statistics of a channel pool of the scenario (CSI-4CAST's population AR/Wiener).
"""
from ...registry import register_kind

register_kind("predictor", "(h_hist [b,L,...]) -> h_future [b,P,...]")

from .classical import (ARPredictor, GeniePredictor, OutdatedPredictor, _check_hist,  # noqa: E402
                        _check_horizon, _Predictor)
from .pad import PADPredictor  # noqa: E402
from .wiener import WienerPredictor, wiener_taps  # noqa: E402

__all__ = ["OutdatedPredictor", "ARPredictor", "GeniePredictor", "PADPredictor", "WienerPredictor",
           "wiener_taps"]
