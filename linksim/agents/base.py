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

from pathlib import Path

import torch

from ..chains.base import Dims
from ..errors import LinksimError
from ..registry import arch_spec, task_spec

__all__ = ["AgentModel", "Dims", "build_model"]


class AgentModel(torch.nn.Module):
    """Base of the trained architectures. ``arch`` and ``tasks`` are set by ``register_arch``.

    Storage and size checks have defaults that fit single-file models; an architecture with other
    files (the LLM agent: heads + a LoRA adapter) overrides :meth:`save_weights`,
    :meth:`load_weights` and :meth:`weight_files`. What varies between architectures is declared
    here, with defaults:

    - ``layouts``: task -> how its training samples are cut (:meth:`linksim.chains.Chain.train_samples`;
      e.g. prediction ``"antenna"``: one BS antenna's series, ``hist [B, L, F]``, or ``"user"``:
      all antennas of a user, ``hist [B, L, M, F]``); a task not named gets its default.
    - ``users_range``: ``(K_min, K_max)`` when one model serves several user counts (training draws
      K per batch from a pool of K_max users), else ``None``; :meth:`users_for` says for which task.
    - ``fingerprint``: what identifies weights the model depends on but does not store (an LLM
      backbone); empty for self-contained models.
    """

    arch = ""
    tasks: tuple[str, ...] = ()
    layouts: dict = {}
    users_range: tuple[int, int] | None = None
    fingerprint = ""
    #: built with ``tasks=`` (the agent's ``[agent] tasks``): it makes parts for those tasks only
    per_task = False
    #: pre-trains part of itself in the first training stage (``train.label_steps`` must be > 0)
    pretrains = False
    dims: Dims

    def diagnostics(self, task: str) -> dict[str, float]:
        """What the model measured of itself on ``task`` since the last call (logged beside the
        validation metrics as ``val_<name>``, e.g. a modality gate's mean weights), then reset."""
        return {}

    def reads(self, task: str) -> tuple[str, ...]:
        """The modalities the model reads in ``task`` (a sensing task's table must list them;
        empty: the task's fixed block inputs)."""
        return ()

    def check_dims(self, task: str, wanted: Dims) -> list[str]:
        """What keeps this model from serving ``task`` at the sizes ``wanted`` (empty: nothing):
        the task's ``must_match`` sizes, and K within ``users_range`` when there is one."""
        must, users = task_spec(task).cls.must_match, self.users_for(task)
        if users is not None:
            must = tuple(k for k in must if k != "num_users")
        out = [f"{k}={getattr(self.dims, k)} (scenario: {getattr(wanted, k)})"
               for k in must if getattr(self.dims, k) != getattr(wanted, k)]
        if users is not None and not users[0] <= wanted.num_users <= users[1]:
            out.append(f"num_users in {users[0]}..{users[1]} (scenario: {wanted.num_users})")
        return out

    def users_for(self, task: str) -> tuple[int, int] | None:
        """The range of K the model serves in ``task`` (``None``: the K it was built for)."""
        return self.users_range

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


def build_model(arch: str, dims: Dims, hparams: dict, tasks=None) -> AgentModel:
    """``ARCHS[arch].cls(dims, **hparams)``; bad options are a one-line ``LinksimError``.
    ``tasks``: the tasks the agent serves (default all of the arch's), handed to a ``per_task``
    model so it builds only their parts."""
    spec = arch_spec(arch)
    cls = spec.cls
    if "tasks" in hparams:
        raise LinksimError(f"agent arch {arch!r}: 'tasks' belongs in [agent], not [model]")
    extra = {"tasks": tuple(tasks or spec.default_tasks)} if cls.per_task else {}
    try:
        model = cls(dims, **hparams, **extra)
    except TypeError as e:
        raise LinksimError(f"agent arch {arch!r}: bad [model] options ({e})") from None
    model.dims = dims
    return model
