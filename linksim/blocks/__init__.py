"""Swappable blocks (precoders, detectors, predictors) behind one registry: ``get(name)``."""
from .registry import BlockSpec, get, names, register, spec

__all__ = ["BlockSpec", "get", "names", "register", "spec"]
