"""Block registry: every swappable block is registered under a short name with its kind.

Kinds and call protocols (tensor shapes; complex tensors are complex64):

- ``precoder``:  ``(h [b,K,M], p_tx [b] or float, noise_var [b] or float) -> w [b,M,K]``,
  with ``sum |w|^2 <= p_tx`` per sample. User k receives ``h[:, k, :] @ w @ s``.
- ``detector``:  ``(y [b,M,T], h [b,M,K], noise_var [b] or float) -> x_hat [b,K,T]`` (unbiased soft
  estimates for linear detectors, constellation points for K-Best/ML).
- ``predictor``: ``(h_hist [b,L,...]) -> h_future [b,P,...]``.

A factory is called as ``factory(**options)``; the options a chain passes are
``num_bits_per_symbol`` (detectors) and ``horizon`` (predictors); factories ignore the others.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ..errors import LinksimError

KINDS = ("precoder", "detector", "predictor")


@dataclass(frozen=True)
class BlockSpec:
    name: str
    kind: str
    factory: Callable
    doc: str


_REGISTRY: dict[str, BlockSpec] = {}


def register(name: str, kind: str):
    """Decorator registering a block class/factory under ``name``."""
    if kind not in KINDS:
        raise ValueError(f"unknown block kind {kind!r}")

    def deco(factory):
        doc = (inspect.getdoc(factory) or "").split("\n")[0]
        _REGISTRY[name] = BlockSpec(name, kind, factory, doc)
        return factory

    return deco


def spec(name: str) -> BlockSpec:
    _load_builtin()
    if name not in _REGISTRY:
        raise LinksimError(f"unknown block '{name}' (known: {', '.join(sorted(_REGISTRY))}, "
                           "or agent:PATH)")
    return _REGISTRY[name]


def get(name: str, **options):
    """Instantiate the block registered as ``name``; options it does not name are dropped."""
    s = spec(name)
    params = inspect.signature(s.factory).parameters
    return s.factory(**{k: v for k, v in options.items() if k in params})


def names(kind: str | None = None) -> list[str]:
    _load_builtin()
    return sorted(n for n, s in _REGISTRY.items() if kind is None or s.kind == kind)


def _load_builtin():
    # importing the modules runs their @register decorators
    from . import precoders, detectors, predictors  # noqa: F401
