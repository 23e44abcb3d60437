r"""``kfactor``: LOS/NLOS by a threshold on a Rician K-factor estimate, fitted on training drops."""
from __future__ import annotations

import torch

from ...channel.modalities import dft_codebook
from ...registry import register_block
from .base import SensingBlock, fit_drops, positive_int


def kfactor_db(csi: torch.Tensor, beams: torch.Tensor) -> torch.Tensor:
    r"""A Rician K-factor estimate per user: the power of the strongest beam-delay bin over the rest.

    The CSI is taken to the beam-delay domain by the orthonormal DFT beams (``beams``, O = 1) and
    the unitary inverse DFT over subcarriers, :math:`X = W h\,\mathbf{F}^H`; with
    :math:`p_{b,\ell} = |X_{b,\ell}|^2` (power preserved),

    .. math::
        \hat{K} = 10\log_{10} \frac{\max_{b,\ell} p_{b,\ell}}{\sum_{b,\ell} p_{b,\ell} - \max_{b,\ell} p_{b,\ell}}

    A LOS path is one plane wave with one delay: it falls in one bin (or a few), the scattered
    clusters spread over many.

    :input csi: [..., M, F], complex. Channels.
    :input beams: [M, M], complex. An orthonormal beam basis (:func:`~linksim.channel.modalities.dft_codebook`).

    :output k: [...], real (``csi``'s real dtype). :math:`\hat{K}` in dB.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.sensing import kfactor_db
        h = torch.ones(1, 16, 48, dtype=torch.complex64)                 # one plane wave, no delay
        kfactor_db(h, torch.eye(16, dtype=torch.complex64) / 4)          # large: one bin holds all
    """
    x = torch.fft.ifft(torch.einsum("bm,...mf->...bf", beams.to(csi.device, csi.dtype), csi), dim=-1, norm="ortho")
    p = x.abs().square().flatten(-2)
    top = p.max(-1).values
    return 10 * torch.log10(top / (p.sum(-1) - top).clamp_min(1e-30))


def best_threshold(feature: torch.Tensor, label: torch.Tensor) -> float:
    """The threshold on ``feature`` (decide positive above it) of the most correct decisions on
    ``(feature, label)``, among the midpoints of the sorted features (the lowest on ties)."""
    f, order = torch.sort(feature.double().reshape(-1))
    y = label.reshape(-1)[order].bool()
    # deciding positive for the i highest: correct = (positives among them) + (negatives below)
    neg_below = torch.cat([torch.zeros(1, dtype=torch.long), (~y).long().cumsum(0)])     # [n+1]
    pos_above = torch.cat([y.long().flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.long)])
    i = int(torch.argmax(neg_below + pos_above))
    if i == 0:
        return float(f[0]) - 1.0
    if i == len(f):
        return float(f[-1]) + 1.0
    return float((f[i - 1] + f[i]) / 2)


@register_block("kfactor", "los_classifier")
class KFactorThreshold(SensingBlock):
    r"""LOS when the K-factor estimate exceeds a threshold fitted on training drops.

    .. math::
        \hat{p}_{\mathrm{LOS}} = \sigma\big(\hat{K} - \kappa\big), \qquad
        \kappa = \arg\max_{\kappa} \sum_{i} \mathbb{1}\big[(\hat{K}_i > \kappa) = \mathrm{LOS}_i\big]

    with :math:`\hat{K}` of :func:`kfactor_db` on the ``csi`` modality and :math:`\sigma` the
    logistic function (per dB), so the decision :math:`\hat{p} > 0.5` is :math:`\hat{K} > \kappa`.
    :math:`\kappa` maximises the accuracy on ``fit_drops`` drops of the scenario's ``[los]``
    table (its users, SNR; LOS by the 3GPP probability), drawn from ``seed``: the same seed gives
    the same threshold.

    :param fit_drops: drops of the training set
    :param seed: seed of the training drops (``None``: the scenario's ``run.seed``)
    :param scenario: the scenario (required; :func:`linksim.blocks.get` passes it)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict with ``csi`` [b, K, M, F], complex.

    :output p_los: [b, K], ``dtype``. LOS probability.

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        kf = linksim.blocks.get("kfactor", kind="los_classifier", scenario=sc)   # fits on 64 drops
        kf.threshold_db                                                           # kappa [dB]
    """

    name, task, needs = "kfactor", "los", ("csi",)

    def __init__(self, fit_drops: int = 64, seed: int | None = None, scenario=None,
                 precision: str | None = None, device=None):
        super().__init__(precision, device)
        self.fit_drops = positive_int(fit_drops, "kfactor: fit_drops")
        seed = scenario.run.seed if seed is None and scenario is not None else seed
        obs, info = fit_drops_of(scenario, self.fit_drops, seed)
        beams = dft_codebook(scenario.channel, 1)
        self.threshold_db = best_threshold(kfactor_db(obs["csi"], beams), info["los"])
        self.register_buffer("beams", beams.to(self.device, self.cdtype), persistent=False)

    def forward(self, obs: dict) -> torch.Tensor:
        k = kfactor_db(self.pick(obs, "csi"), self.beams)
        return torch.sigmoid(k - self.threshold_db).to(self.dtype)


def fit_drops_of(scenario, n, seed):
    return fit_drops(scenario, "los", n, 0 if seed is None else seed, "kfactor")
