"""Beam selection: from the CSI history (or other modalities), pick the beam of an oversampled
DFT codebook on the BS array with the largest gain on the FUTURE channel -> top-1 / top-3
accuracy and the beamforming-gain loss in dB."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..channel.modalities import beam_power, dft_codebook
from ..metrics import ErrorRate, Mean
from ..registry import register_task
from ..scenario import register_section, setting
from .sensing import SensingChain, call, gnss_setting, los_setting, modalities_setting, snr_setting, zeroed_setting


@register_section("beam")
@dataclass
class Beam:
    """``[beam]``: ``history`` noisy CSI samples -> the best beam over the next ``horizon`` ones."""

    num_users: int = setting(4, lambda v: 0 < v <= 64, "must be in 1..64")
    history: int = setting(8, lambda v: 0 < v <= 64, "must be in 1..64")
    horizon: int = setting(4, lambda v: 0 < v <= 64, "must be in 1..64")
    oversampling: int = setting(2, lambda v: 1 <= v <= 8, "must be in 1..8 (DFT oversampling per dimension)")
    snr_db: float = snr_setting()
    gnss_std_m: float = gnss_setting()
    modalities: str = modalities_setting("csi_history")
    zeroed: str = zeroed_setting()
    los: str = los_setting()
    num_samples: int = setting(256, lambda v: v > 0, "must be > 0")


def future_gains(h: torch.Tensor, beams: torch.Tensor, history: int) -> torch.Tensor:
    r"""Each beam's gain on the future channel, averaged over its samples and subcarriers.

    .. math::
        g_{k,b} = \frac{1}{P F} \sum_{t=L}^{L+P-1} \sum_f |w_b^T h_{t,k,f}|^2

    :input h: [b, L+P, K, M, F], complex. Drops (clean).
    :input beams: [B, M], complex. The codebook.
    :input history: int. ``L``.

    :output g: [b, K, B], real.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.chains.beam import future_gains
        h = torch.randn(2, 12, 4, 16, 8, dtype=torch.complex64)
        g = future_gains(h, torch.eye(16, dtype=torch.complex64), 8)     # [2, 4, 16]
    """
    return beam_power(h[:, history:].movedim(1, -2).flatten(-2), beams)


@register_task("beam", "beam_selector")
class BeamChain(SensingChain):
    """Beam selection on the future channel: top-1 / top-3 accuracy and gain loss in dB.

    One sample = one user of one drop. The label is the beam of largest future gain
    (:func:`future_gains`); the block scores every beam and its best-scored beam is used.
    ``top1_accuracy``: the best-scored beam is the label; ``top3_accuracy``: the label is among
    the three best-scored; ``gain_loss_db``: mean of :math:`10\\log_{10}(g_{\\max} / g_{\\hat b})`
    (0 for the exhaustive search on the true future channel, ``beam_search``).
    """

    section = "beam"
    references = ("last_beam",)
    must_match = ("num_bs_antennas", "num_subcarriers", "num_beams")
    val_metric = "gain_loss_db"
    prompt = (
        "[beam selection]",
        "A base station with {antennas} antennas serves {users} moving users on {subcarriers} OFDM "
        "subcarriers, one channel sample every {spacing_ms:g} ms, from a codebook of DFT beams.",
        "Choose for each user the beam with the largest gain over the next {horizon} samples.",
    )

    def __init__(self, scenario, cache=None):
        super().__init__(scenario, cache)
        self.beams = dft_codebook(scenario.channel, scenario.beam.oversampling, self.device, self.cdtype)

    def labels(self, h, info, sc):
        return {"truth": future_gains(h, self.beams, sc.beam.history)}

    @staticmethod
    def new_metrics(block=None):
        return {"top1_accuracy": ErrorRate(), "top3_accuracy": ErrorRate(), "gain_loss_db": Mean()}

    @staticmethod
    def measure(block, batch, acc):
        g = batch["truth"]
        scores = call(block, batch)
        top = scores.topk(min(3, g.shape[-1]), dim=-1).indices
        best = g.topk(1, dim=-1).indices
        acc["top1_accuracy"].update((top[..., :1] == best).sum(), best.numel())
        acc["top3_accuracy"].update((top == best).any(-1).sum(), best.numel())
        chosen = g.gather(-1, top[..., :1])
        acc["gain_loss_db"].update(10 * torch.log10(g.gather(-1, best) / chosen).squeeze(-1))

    @classmethod
    def score(cls, metrics):
        """The gain loss in dB as it is (lower is better)."""
        return float(metrics["val_gain_loss_db"])
