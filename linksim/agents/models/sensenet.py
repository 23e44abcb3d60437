r"""A small network for the sensing tasks (``los``, ``beam``, ``pathloss``, ``position``): the
"small network" row beside the classical blocks and the LLM agents.

Data flow (one embedding per user)::

    modalities --features, standardise, MLP each--> embeddings --fusion--> z [b, K, width]
    z --residual MLP blocks--> z' --the task's decoder--> block output
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims
from ._modalities import ModalityEncoder, check_inputs
from ._sensing import SensingDecoder, sensing_loss

__all__ = ["SenseNet"]

TASKS = ("los", "beam", "pathloss", "position")


class _Residual(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.f = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x):
        return x + self.f(x)


@register_arch("sensenet", tasks=TASKS, tiny={"width": 32, "hidden": 32, "blocks": 1})
class SenseNet(AgentModel):
    r"""Per-user MLP on the features of the modalities it reads, one decoder per task it serves.

    .. math::
        \mathbf{z}_k = \operatorname{fuse}\big(\{\operatorname{MLP}_m(\operatorname{std}(\phi_m(\text{obs}_m)))_k\}_m\big),
        \quad \text{output}_k = \operatorname{dec}_\tau\big(\operatorname{Res}^{(n)}(\mathbf{z}_k)\big)

    with the feature maps :math:`\phi_m` and fusions of :mod:`._modalities` and the decoders and
    losses of :mod:`._sensing`. Users are independent samples (one drop's users share nothing here).

    :param dims: scenario sizes (M, F; ``num_beams`` for ``beam``)
    :param tasks: the tasks served (the agent's ``[agent] tasks``; set by :func:`build_model`)
    :param inputs: the modalities read (default ``["csi"]``); the scenario's task table must list them
    :param fusion: ``"concat"`` (default), ``"gate"`` or ``"attention"``
    :param width: embedding width (default 128)
    :param hidden: MLP hidden width (default 256)
    :param blocks: residual blocks after the fusion (default 2)
    :param encoders: ``"trained"`` (default) or ``"contrastive"`` (pre-trained in the first stage,
        ``train.label_steps``, then frozen behind adapters: :mod:`._modalities`)

    :input obs: dict, modality name -> tensor (a sensing block's input, :mod:`linksim.chains.sensing`).
    :output: the task's block output (``los`` [b,K], ``beam`` [b,K,B], ``pathloss`` [b,K],
        ``position`` [b,K,2]).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents import Dims, build_model
        dims = Dims(16, 4, 48, 1, 0, 4, 6, num_beams=64)
        net = build_model("sensenet", dims, {"inputs": ["csi", "rsrp"]}, tasks=("pathloss",)).eval()
        obs = {"csi": torch.randn(2, 4, 16, 48, dtype=torch.complex64), "rsrp": -90 + torch.randn(2, 4, 16)}
        net.task_forward("pathloss", obs).shape          # [2, 4] (untrained)
    """

    per_task = True

    def __init__(self, dims: Dims, tasks=None, inputs=("csi",), fusion: str = "concat", width: int = 128,
                 hidden: int = 256, blocks: int = 2, encoders: str = "trained"):
        super().__init__()
        self.dims = dims
        self.served = tuple(tasks or TASKS)
        self.inputs = check_inputs(inputs, fusion, "sensenet", encoders)
        self.pretrains = encoders == "contrastive"
        for key, v in (("width", width), ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise LinksimError(f"sensenet: model.{key} must be an integer >= 1, got {v!r}")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise LinksimError(f"sensenet: model.blocks must be an integer >= 0, got {blocks!r}")
        self.encoder = ModalityEncoder(self.inputs, dims.num_bs_antennas, dims.num_subcarriers, width, hidden,
                                       fusion, encoders)
        self.body = nn.Sequential(*[_Residual(width, hidden) for _ in range(blocks)])
        self.decoders = nn.ModuleDict({t: SensingDecoder(t, dims, width, hidden) for t in self.served})

    def reads(self, task: str) -> tuple[str, ...]:
        return self.inputs

    def diagnostics(self, task: str) -> dict[str, float]:
        return self.encoder.gate_means()

    def embed(self, obs: dict) -> torch.Tensor:
        return self.body(self.encoder(obs))

    def task_forward(self, task: str, obs: dict):
        if task not in self.decoders:
            raise LinksimError(f"sensenet: serves {', '.join(self.decoders)}, not {task}")
        return self.decoders[task].output(self.embed(obs))

    def training_loss(self, batch: dict) -> torch.Tensor:
        return sensing_loss(self.encoder, self.decoders[batch["task"]], self.body, batch)
