r"""The sensing tasks' outputs and losses for trained models: one decoder per task, from a user's
embedding ``[b, K, width]`` to what the task's blocks return (:mod:`linksim.chains.sensing`).

=========  ==============================  =======================================================
task       block output                    training loss
=========  ==============================  =======================================================
los        LOS probability [b,K]           binary cross-entropy on the LOS state
beam       a score per beam [b,K,B]        cross-entropy on the beam of largest future gain
pathloss   large-scale gain [b,K] dB       MSE on the standardised gain
position   position [b,K,2] m              MSE on the standardised coordinates
=========  ==============================  =======================================================

Regression targets are standardised by statistics fitted on the first training batch
(:class:`~._modalities.Standardize`), stored with the weights, so the decoder's output layer works
near unit scale whatever the units.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import LinksimError
from ._modalities import Standardize

__all__ = ["SENSING_TASKS", "SensingDecoder", "observation", "sensing_loss"]

#: task -> (output size from the dims, regression?)
SENSING_TASKS = {
    "los": (lambda d: 1, False),
    "beam": (lambda d: d.num_beams, False),
    "pathloss": (lambda d: 1, True),
    "position": (lambda d: 2, True),
}


def observation(batch: dict) -> dict:
    """What a sensing model may read of a training batch: the modalities the scenario's table
    lists (``batch["inputs"]``) and the system information, as a block is handed them."""
    from ...chains.sensing import observation as block_view
    return block_view(batch)


def sensing_loss(encoder, decoder: "SensingDecoder", body, batch: dict) -> torch.Tensor:
    """The training loss of a sensing batch: the encoders' contrastive pre-training in the first
    stage (``encoders = "contrastive"``, :class:`~._modalities.ModalityEncoder`), else the task's
    loss of ``decoder`` on ``body(encoder(obs))``."""
    obs = observation(batch)
    if encoder.encoders == "contrastive" and batch.get("stage") == "labels":
        return encoder.contrastive_loss(obs)
    return decoder.loss(body(encoder(obs)), batch["truth"])


class SensingDecoder(nn.Module):
    r"""A user's embedding -> the output of sensing task ``task`` (module docstring).

    :param task: ``los`` | ``beam`` | ``pathloss`` | ``position``
    :param dims: the agent's sizes (``num_beams`` for ``beam``)
    :param width: embedding width
    :param hidden: hidden width

    :input z: [b, K, width] real.
    :output: :meth:`output` the block output; :meth:`loss` a scalar against the batch's ``truth``.
    """

    def __init__(self, task: str, dims, width: int, hidden: int = 256):
        super().__init__()
        if task not in SENSING_TASKS:
            raise LinksimError(f"no sensing decoder for task {task!r} (known: {', '.join(SENSING_TASKS)})")
        size, regression = SENSING_TASKS[task]
        n = size(dims)
        if n < 1:
            raise LinksimError(f"{task}: the agent's sizes have no beam codebook (num_beams = {n})")
        self.task = task
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, n))
        self.target = Standardize(n) if regression else None

    def output(self, z: torch.Tensor) -> torch.Tensor:
        y = self.net(z)
        if self.task == "los":
            return torch.sigmoid(y[..., 0])
        if self.task == "beam":
            return y
        y = self.target.inverse(y)
        return y[..., 0] if self.task == "pathloss" else y

    def loss(self, z: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        y = self.net(z)
        if self.task == "los":
            return F.binary_cross_entropy_with_logits(y[..., 0], truth.float())
        if self.task == "beam":
            return F.cross_entropy(y.reshape(-1, y.shape[-1]), truth.argmax(-1).reshape(-1))
        t = truth.float()[..., None] if self.task == "pathloss" else truth.float()
        return F.mse_loss(y, self.target(t))
