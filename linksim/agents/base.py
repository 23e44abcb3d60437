"""What every trained block (agent model) provides, so one harness trains and loads them all.

An agent model is a ``torch.nn.Module`` registered with :func:`register_model` under a *kind*
(``detnet``, ``oampnet``, ``cnn``, ``lstm``, ...). It is built as ``cls(dims, **hparams)`` where
``dims`` are the scenario sizes it is trained for and ``hparams`` come from ``agent.toml [model]``.

- ``forward`` is the block protocol of its task (see ``linksim.blocks.registry``):
  detection ``(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T]``;
  precoding ``(h [b,K,M], p_tx, noise_var) -> w [b,M,K]``;
  prediction ``(h_hist [b,L,K,M,F]) -> h_future [b,P,K,M,F]``.
- ``training_loss(batch) -> scalar tensor``: the loss on one training batch (dict, keys below).

Training batches (all complex tensors complex64, real ones float32):

- detection:  ``y [B,M,T]``, ``h [B,M,K]``, ``noise_var [B]``, ``x [B,K,T]`` (true symbols),
  ``idx [B,K,T]`` int64 (their constellation indices).
- precoding:  ``h [B,K,M]``, ``p_tx [B]``, ``noise_var [B]``, ``p_ref [B,K]`` and ``lam_ref [B,K]``
  (WMMSE's structure parameters, see ``blocks.precoders.wmmse_p_lambda``), ``stage`` (str:
  ``"labels"`` = fit (p, lambda) to the references, ``"rate"`` = maximise the sum-rate).
- prediction: ``hist [B,L,F]`` (noisy history of one BS antenna's subcarriers), ``future [B,P,F]``;
  predictors work per antenna series and implement ``forward`` by reshaping.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..scenario import Scenario

TASK_KIND = {"detection": "detector", "precoding": "precoder", "prediction": "predictor"}


@dataclass(frozen=True)
class Dims:
    """Sizes an agent is built for (all ints)."""

    num_bs_antennas: int    # M
    num_users: int          # K
    num_subcarriers: int    # F
    history: int            # L
    horizon: int            # P
    bits_per_symbol: int
    symbols_per_sample: int  # T

    @classmethod
    def from_scenario(cls, sc: Scenario, task: str) -> "Dims":
        section = {"detection": sc.detection, "precoding": sc.precoding,
                   "prediction": sc.prediction}[task]
        return cls(sc.channel.num_bs_antennas, section.num_users, sc.channel.num_subcarriers,
                   sc.prediction.history, sc.prediction.horizon, sc.detection.bits_per_symbol,
                   sc.detection.symbols_per_sample)

    def as_dict(self) -> dict:
        return asdict(self)


MODELS: dict[str, tuple[type, str]] = {}


def register_model(kind: str, task: str):
    """Class decorator: register an agent model class under ``kind`` for ``task``."""
    if task not in TASK_KIND:
        raise ValueError(f"unknown task {task!r}")

    def deco(cls):
        cls.task = task
        cls.kind = kind
        MODELS[kind] = (cls, task)
        return cls

    return deco


def build_model(kind: str, dims: Dims, hparams: dict) -> torch.nn.Module:
    from . import models  # noqa: F401  (registers the built-in kinds)
    from ..errors import LinksimError

    if kind not in MODELS:
        raise LinksimError(f"unknown agent kind {kind!r} (known: {', '.join(sorted(MODELS))})")
    cls, _ = MODELS[kind]
    try:
        return cls(dims, **hparams)
    except TypeError as e:
        raise LinksimError(f"agent kind {kind!r}: bad [model] options ({e})") from None
