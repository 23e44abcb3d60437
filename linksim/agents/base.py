"""What every trained block (agent model) provides, so one harness trains and loads them all.

An agent model is a :class:`AgentModel` registered with
:func:`linksim.registry.register_arch` under an *architecture* name (``detnet``, ``oampnet``,
``cnn``, ``lstm``, ...) together with the tasks it can serve. It is built as
``cls(dims, **hparams)`` where ``dims`` are the scenario sizes it is trained for and ``hparams``
come from ``agent.toml [model]``.

- :meth:`AgentModel.task_forward` ``(task, *inputs)`` is the block protocol of ``task`` (see
  :mod:`linksim.registry`); single-task models implement ``forward`` with that protocol:
  detection ``(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T]``;
  precoding ``(h [b,K,M], p_tx, noise_var) -> w [b,M,K]``;
  prediction ``(h_hist [b,L,K,M,F]) -> h_future [b,P,K,M,F]``.
- :meth:`AgentModel.training_loss` ``(batch) -> scalar tensor``: the loss on one training batch
  (dict, keys below; ``batch["task"]`` names the task).

Training batches (complex tensors complex64, real ones float32):

- detection:  ``y [B,M,T]``, ``h [B,M,K]``, ``noise_var [B]``, ``x [B,K,T]`` (true symbols),
  ``idx [B,K,T]`` int64 (their constellation indices).
- precoding:  ``h [B,K,M]``, ``p_tx [B]``, ``noise_var [B]``, ``p_ref [B,K]`` and ``lam_ref [B,K]``
  (WMMSE's structure parameters, see :func:`linksim.blocks.precoders.wmmse_p_lambda`), ``stage``
  (``"labels"`` = fit (p, lambda) to the references, ``"rate"`` = maximise the sum-rate).
- prediction: ``hist [B,L,F]`` (noisy history of one BS antenna's subcarriers), ``future [B,P,F]``;
  predictors work per antenna series and implement ``forward`` by reshaping.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import LinksimError
from ..registry import arch_spec
from ..scenario import Scenario

#: the scenario table holding each task's settings
SECTION = {"detection": "detection", "precoding": "precoding", "prediction": "prediction"}


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
    sample_spacing_us: int = 500   # CSI sample spacing (the LLM's instruction states it)

    @classmethod
    def from_scenario(cls, sc: Scenario, task: str) -> "Dims":
        section = getattr(sc, SECTION[task])
        return cls(sc.channel.num_bs_antennas, section.num_users, sc.channel.num_subcarriers,
                   sc.prediction.history, sc.prediction.horizon, sc.detection.bits_per_symbol,
                   sc.detection.symbols_per_sample, round(sc.channel.sample_spacing_s * 1e6))

    def as_dict(self) -> dict:
        return asdict(self)


# the sizes an agent must share with the scenario it runs in, per task (architectures may differ:
# :meth:`AgentModel.check_dims`)
MUST_MATCH = {
    "detection": ("num_bs_antennas", "num_users", "bits_per_symbol"),
    "precoding": ("num_bs_antennas", "num_users"),
    "prediction": ("num_subcarriers", "history", "horizon"),   # per-antenna: any M and K
}


class AgentModel(torch.nn.Module):
    """Base of the trained architectures. ``arch`` and ``tasks`` are set by ``register_arch``.

    Storage and size checks have defaults that fit single-file models; an architecture with other
    files (the LLM agent: heads + a LoRA adapter) overrides :meth:`save_weights`,
    :meth:`load_weights` and :meth:`weight_files`. ``prediction_layout`` says how prediction
    training samples are cut: ``"antenna"`` (one BS antenna's series, ``hist [B, L, F]``) or
    ``"user"`` (all antennas of a user, ``hist [B, L, M, F]``).
    """

    arch = ""
    tasks: tuple[str, ...] = ()
    prediction_layout = "antenna"
    dims: Dims

    def check_dims(self, task: str, wanted: Dims) -> list[str]:
        """What keeps this model from serving ``task`` at the sizes ``wanted`` (empty: nothing)."""
        return [f"{k}={getattr(self.dims, k)} (scenario: {getattr(wanted, k)})"
                for k in MUST_MATCH[task] if getattr(self.dims, k) != getattr(wanted, k)]

    def save_weights(self, folder: Path) -> None:
        """Write the trained weights into the agent folder (default: ``model.safetensors``)."""
        from safetensors.torch import save_model

        from .spec import WEIGHTS
        save_model(self, str(Path(folder) / WEIGHTS))

    def load_weights(self, folder: Path) -> None:
        """Read them back (strict: every tensor must match)."""
        from safetensors.torch import load_model

        from .spec import WEIGHTS
        load_model(self, str(Path(folder) / WEIGHTS), strict=True)

    def weight_files(self, folder: Path) -> list[Path]:
        """The files :meth:`save_weights` writes (their hash is the agent's fingerprint)."""
        from .spec import WEIGHTS
        return [Path(folder) / WEIGHTS]

    def task_forward(self, task: str, *inputs):
        """The block protocol of ``task`` (single-task models: ``forward``)."""
        if task not in self.tasks:
            raise LinksimError(f"{self.arch}: serves {', '.join(self.tasks)}, not {task}")
        return self(*inputs)

    def training_loss(self, batch: dict) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def build_model(arch: str, dims: Dims, hparams: dict) -> AgentModel:
    """``ARCHS[arch].cls(dims, **hparams)``; bad options are a one-line ``LinksimError``."""
    cls = arch_spec(arch).cls
    try:
        model = cls(dims, **hparams)
    except TypeError as e:
        raise LinksimError(f"agent arch {arch!r}: bad [model] options ({e})") from None
    model.dims = dims
    return model
