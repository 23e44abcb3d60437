r"""Large-scale gain: ``uma_formula`` (TR 38.901 UMa path loss at the GNSS-reported distance)
and ``rsrp_power`` (the measured mean beam RSRP, calibrated on training drops)."""
from __future__ import annotations

import math

import torch

from ...registry import register_block
from .base import SensingBlock, positive_int
from .base import fit_drops as draw_fit_drops

C_LIGHT = 299_792_458.0
UT_HEIGHT_M = 1.5      # outdoor UTs of Sionna's single-sector topology
MIN_DISTANCE_M = 10.0  # UMa's formula holds from 10 m


def uma_los_probability(d2d: torch.Tensor) -> torch.Tensor:
    r"""TR 38.901 Table 7.4.2-1, UMa, outdoor UT at :math:`h_{UT} \le 13` m:
    :math:`\Pr_{LOS} = 1` for :math:`d_{2D} \le 18` m, else
    :math:`18/d_{2D} + e^{-d_{2D}/63}(1 - 18/d_{2D})`.

    :input d2d: [...], real. 2-D distance [m].
    :output p: [...], real.
    """
    p = 18 / d2d + torch.exp(-d2d / 63) * (1 - 18 / d2d)
    return torch.where(d2d <= 18, torch.ones_like(p), p)


def uma_pathloss_db(d2d: torch.Tensor, h_bs, carrier_hz: float, state: str = "nlos",
                    h_ut: float = UT_HEIGHT_M) -> torch.Tensor:
    r"""TR 38.901 Table 7.4.1-1 UMa basic path loss [dB] (effective environment height 1 m).

    .. math::
        \mathrm{PL}_{LOS} &= \begin{cases} 28 + 22\log_{10} d_{3D} + 20\log_{10} f_c & d_{2D} < d'_{BP} \\
            28 + 40\log_{10} d_{3D} + 20\log_{10} f_c - 9\log_{10}(d'^2_{BP} + (h_{BS} - h_{UT})^2) & \text{else} \end{cases} \\
        \mathrm{PL}_{NLOS} &= \max\big(\mathrm{PL}_{LOS},\ 13.54 + 39.08\log_{10} d_{3D} + 20\log_{10} f_c - 0.6(h_{UT} - 1.5)\big)

    with :math:`f_c` in GHz, :math:`d'_{BP} = 4 (h_{BS} - 1)(h_{UT} - 1) f_c / c` (Hz) and
    :math:`d_{3D} = \sqrt{d_{2D}^2 + (h_{BS} - h_{UT})^2}`. ``state = "mixed"``: the LOS
    probability's mix in dB, :math:`p\,\mathrm{PL}_{LOS} + (1-p)\,\mathrm{PL}_{NLOS}`
    (:func:`uma_los_probability`), the MMSE guess in dB when the state is unknown.

    :input d2d: [...], real. 2-D distance [m].
    :input h_bs: float or [...] real. BS height [m].
    :input carrier_hz: float. Carrier [Hz].
    :input state: ``"los"`` | ``"nlos"`` | ``"mixed"``.
    :input h_ut: float. UT height [m].

    :output pl: [...], real. Path loss [dB].

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.sensing import uma_pathloss_db
        uma_pathloss_db(torch.tensor([100.0]), 25.0, 2.4e9)          # NLOS at 100 m: 99.8 dB
    """
    h_bs = torch.as_tensor(h_bs, dtype=d2d.dtype, device=d2d.device)
    d3d = torch.sqrt(d2d.square() + (h_bs - h_ut) ** 2)
    fc = 20 * math.log10(carrier_hz / 1e9)
    d_bp = 4 * (h_bs - 1) * (h_ut - 1) * carrier_hz / C_LIGHT
    pl1 = 28 + 22 * torch.log10(d3d) + fc
    pl2 = 28 + 40 * torch.log10(d3d) + fc - 9 * torch.log10(d_bp.square() + (h_bs - h_ut) ** 2)
    los = torch.where(d2d < d_bp, pl1, pl2)
    if state == "los":
        return los
    nlos = torch.maximum(los, 13.54 + 39.08 * torch.log10(d3d) + fc - 0.6 * (h_ut - 1.5))
    if state == "nlos":
        return nlos
    p = uma_los_probability(d2d)
    return p * los + (1 - p) * nlos


@register_block("uma_formula", "pathloss_estimator")
class UmaFormula(SensingBlock):
    r"""The TR 38.901 UMa path loss at the distance of the GNSS report.

    .. math::
        \hat{G} = -\mathrm{PL}\big(\max(\|\hat{x}\|, 10\,\mathrm{m})\big)

    with :math:`\hat{x}` the ``gnss`` report (position relative to the BS) and PL of
    :func:`uma_pathloss_db` at the BS height of the drop, a UT height of 1.5 m and the
    scenario's carrier. Shadowing (zero mean in dB) is not predicted, so its RMSE is at least
    the shadowing's standard deviation (UMa: 4 dB LOS, 6 dB NLOS).

    :param state: ``"mixed"`` (LOS-probability mix, default), ``"nlos"`` or ``"los"``
    :param scenario: the scenario (its carrier; :func:`linksim.blocks.get` passes it)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict with ``gnss`` [b, K, 2] m and ``bs_height`` [b] m, real.

    :output gain_db: [b, K], ``dtype``.

    .. rubric:: Examples

    .. code-block:: python

        import torch, linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        f = linksim.blocks.get("uma_formula", kind="pathloss_estimator", scenario=sc, state="nlos")
        f({"gnss": torch.tensor([[[60.0, 80.0]]]), "bs_height": torch.tensor([25.0])})   # -99.8
    """

    name, task, needs = "uma_formula", "pathloss", ("gnss",)

    def __init__(self, state: str = "mixed", scenario=None, precision: str | None = None, device=None):
        super().__init__(precision, device)
        from ...errors import LinksimError
        if state not in ("mixed", "los", "nlos"):
            raise LinksimError(f"uma_formula: state must be 'mixed', 'los' or 'nlos', got {state!r}")
        self.state = state
        self.carrier_hz = scenario.channel.carrier_hz if scenario is not None else 2.4e9

    def forward(self, obs: dict) -> torch.Tensor:
        d2d = self.pick(obs, "gnss").norm(dim=-1).clamp_min(MIN_DISTANCE_M)
        h_bs = self.pick(obs, "bs_height")[:, None]
        return -uma_pathloss_db(d2d, h_bs, self.carrier_hz, self.state)


def rsrp_total_db(rsrp: torch.Tensor) -> torch.Tensor:
    r"""The mean received power per antenna from an orthonormal beam sweep:
    :math:`10\log_{10}\frac1M\sum_b 10^{\mathrm{rsrp}_b/10}` (the beams' gains sum to the
    channel's power), ``[..., M] -> [...]``."""
    return 10 * torch.log10(torch.pow(10.0, rsrp / 10).mean(-1))


@register_block("rsrp_power", "pathloss_estimator")
class RsrpPower(SensingBlock):
    r"""The measured received power, less a calibration offset fitted on training drops.

    .. math::
        \hat{G} = 10\log_{10}\frac1M\sum_b 10^{\mathrm{rsrp}_b/10} - \delta, \qquad
        \delta = \frac1n \sum_i \Big(10\log_{10}\frac1M\sum_b 10^{\mathrm{rsrp}_{i,b}/10} - G_i\Big)

    The sweep's power is the large-scale gain plus the BS antenna pattern's gain towards the
    user, the small-scale power of the drop and the noise; :math:`\delta` removes their mean
    over ``fit_drops`` drops of the ``[pathloss]`` table drawn from ``seed``.

    :param fit_drops: drops of the calibration set
    :param seed: its seed (``None``: the scenario's ``run.seed``)
    :param scenario: the scenario (required; :func:`linksim.blocks.get` passes it)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict with ``rsrp`` [b, K, M] dB, real.

    :output gain_db: [b, K], ``dtype``.

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        r = linksim.blocks.get("rsrp_power", kind="pathloss_estimator", scenario=sc)
        r.offset_db                                     # the antenna/small-scale offset [dB]
    """

    name, task, needs = "rsrp_power", "pathloss", ("rsrp",)

    def __init__(self, fit_drops: int = 64, seed: int | None = None, scenario=None,
                 precision: str | None = None, device=None):
        super().__init__(precision, device)
        self.fit_drops = positive_int(fit_drops, "rsrp_power: fit_drops")
        seed = scenario.run.seed if seed is None and scenario is not None else (seed or 0)
        obs, info = draw_fit_drops(scenario, "pathloss", self.fit_drops, seed, "rsrp_power")
        self.offset_db = float((rsrp_total_db(obs["rsrp"].double()) - info["gain_db"].double()).mean())

    def forward(self, obs: dict) -> torch.Tensor:
        return (rsrp_total_db(self.pick(obs, "rsrp")) - self.offset_db).to(self.dtype)
