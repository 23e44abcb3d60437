r"""Beam selection: ``last_beam`` (the best beam of the last CSI sample: outdated) and the
``beam_search`` reference (exhaustive search on the true future channel: the limit)."""
from __future__ import annotations

import torch

from ...channel.modalities import beam_power, dft_codebook
from ...registry import register_block
from .base import SensingBlock


@register_block("last_beam", "beam_selector")
class LastBeam(SensingBlock):
    r"""Outdated beam selection: every beam scored by its gain on the last (noisy) CSI sample.

    .. math::
        s_{k,b} = \frac{1}{F}\sum_f |w_b^T y_{t_0,k,f}|^2

    with :math:`y_{t_0}` the last history sample (the ``csi`` modality, or the last sample of
    ``csi_history``) and :math:`w_b` the oversampled DFT codebook of the scenario's ``[beam]``
    table (:func:`~linksim.channel.modalities.dft_codebook`). Its best beam is the one of the
    present channel; the task scores it on the future one.

    :param oversampling: DFT oversampling per dimension (``None``: ``[beam] oversampling``)
    :param scenario: the scenario (its array; :func:`linksim.blocks.get` passes it)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict with ``csi`` [b, K, M, F] or ``csi_history`` [b, L, K, M, F], complex.

    :output scores: [b, K, B], ``dtype``. ``B = O^2 M`` beams.

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        sel = linksim.blocks.get("last_beam", kind="beam_selector", scenario=sc)
        h = linksim.ChannelSource(sc).sample(2, num_time=1)                      # [2, 1, 4, 16, 48]
        sel({"csi": h[:, 0]}).shape                                              # [2, 4, 64]
    """

    name, task, needs_any = "last_beam", "beam", ("csi", "csi_history")

    def __init__(self, oversampling: int | None = None, scenario=None, precision: str | None = None, device=None):
        super().__init__(precision, device)
        from ...scenario import Channel
        channel = scenario.channel if scenario is not None else Channel()
        o = oversampling if oversampling is not None else (scenario.beam.oversampling if scenario is not None else 2)
        self.oversampling = int(o)
        self.register_buffer("beams", dft_codebook(channel, self.oversampling, self.device, self.cdtype),
                             persistent=False)

    def forward(self, obs: dict) -> torch.Tensor:
        y = obs["csi"] if "csi" in obs else obs["csi_history"][:, -1]
        return beam_power(self.cast(y), self.beams).to(self.dtype)


@register_block("beam_search", "reference", serves="beam_selector")
class BeamSearch(SensingBlock):
    r"""The limit of beam selection: exhaustive search on the true future channel.

    Handed each beam's true future gain :math:`g_{k,b}` (the task's label,
    :func:`linksim.chains.beam.future_gains`), it scores every beam by it, so its best-scored
    beam is the best one: top-1 accuracy 1 and gain loss exactly 0 dB.

    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict. The modalities (unused).
    :input gains: [b, K, B], real. The true future gains.

    :output scores: [b, K, B], ``dtype``. ``gains``.

    .. rubric:: Examples

    .. code-block:: python

        import torch, linksim
        ref = linksim.blocks.get("beam_search", kind="beam_selector")
        g = torch.rand(2, 4, 64)
        assert torch.equal(ref({}, g), g)
    """

    name, task = "beam_search", "beam"

    def check_scenario(self, scenario) -> None:
        """Sees the truth: any modalities do."""

    def forward(self, obs: dict, gains: torch.Tensor) -> torch.Tensor:
        return self.cast(gains).to(self.dtype)
