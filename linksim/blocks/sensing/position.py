r"""Positioning: ``angle_power`` (azimuth from the strongest beam, range from the received power:
a single-BS geometric estimate), ``knn`` (fingerprinting on training drops) and ``gnss_report``."""
from __future__ import annotations

import math

import torch

from ...channel.modalities import beam_directions, beam_power, dft_codebook
from ...registry import register_block
from .base import SensingBlock, positive_int
from .base import fit_drops as draw_fit_drops
from .pathloss import MIN_DISTANCE_M, UT_HEIGHT_M, rsrp_total_db


@register_block("gnss_report", "positioner")
class GnssReport(SensingBlock):
    r"""The GNSS report as it is: :math:`\hat{x} = x + e`, :math:`e \sim \mathcal{N}(0, \sigma^2 I)`
    (``[position] gnss_std_m``), so its mean error is :math:`\sigma\sqrt{\pi/2}`.

    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict with ``gnss`` [b, K, 2] m, real.

    :output xy: [b, K, 2], ``dtype``.

    .. rubric:: Examples

    .. code-block:: python

        import torch, linksim
        g = linksim.blocks.get("gnss_report", kind="positioner")
        g({"gnss": torch.zeros(1, 4, 2)}).shape                 # [1, 4, 2]
    """

    name, task, needs = "gnss_report", "position", ("gnss",)

    def forward(self, obs: dict) -> torch.Tensor:
        return self.pick(obs, "gnss")


def _rotation(orientation: torch.Tensor) -> torch.Tensor:
    """TR 38.901 (7.1-1) rotation R = Rz(yaw) Ry(tilt) Rx(slant), ``[b, 3] -> [b, 3, 3]``."""
    a, b, c = orientation.unbind(-1)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rz = torch.stack([a.cos(), -a.sin(), zero, a.sin(), a.cos(), zero, zero, zero, one], -1)
    ry = torch.stack([b.cos(), zero, b.sin(), zero, one, zero, -b.sin(), zero, b.cos()], -1)
    rx = torch.stack([one, zero, zero, zero, c.cos(), -c.sin(), zero, c.sin(), c.cos()], -1)
    return rz.unflatten(-1, (3, 3)) @ ry.unflatten(-1, (3, 3)) @ rx.unflatten(-1, (3, 3))


@register_block("angle_power", "positioner")
class AnglePower(SensingBlock):
    r"""Single-BS geometric positioning: the azimuth of the strongest beam, the range of the
    received power.

    The strongest beam of an oversampled DFT codebook on the ``csi`` gives the direction cosines
    :math:`(u, v)` in the array's frame; the direction
    :math:`d = R\,(\sqrt{1-u^2-v^2}, u, v)^T` (R: the BS orientation, TR 38.901 7.1-1) gives the
    azimuth :math:`\phi = \mathrm{atan2}(d_y, d_x)`. The range inverts the UMa NLOS path loss
    on the measured power of the ``rsrp`` sweep (:func:`~linksim.blocks.sensing.pathloss.rsrp_total_db`,
    less an offset :math:`\delta` fitted on training drops as ``rsrp_power`` does):

    .. math::
        d_{3D} = 10^{(\mathrm{PL} - 13.54 - 20\log_{10} f_c)/39.08}, \quad
        \mathrm{PL} = -(\mathrm{rsrp} - \delta), \quad
        \hat{x} = \sqrt{d_{3D}^2 - (h_{BS} - 1.5)^2}\,(\cos\phi, \sin\phi)

    Not the delay: Sionna's TR 38.901 cluster delays are relative to the first arrival
    (38.901 7.5 step 5), so no delay in the CSI measures the range.

    :param oversampling: DFT oversampling of the angle search
    :param fit_drops: drops of the power calibration
    :param seed: their seed (``None``: the scenario's ``run.seed``)
    :param scenario: the scenario (required; :func:`linksim.blocks.get` passes it)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict with ``csi`` [b, K, M, F] complex, ``rsrp`` [b, K, M] dB,
        ``bs_orientation`` [b, 3] rad, ``bs_height`` [b] m.

    :output xy: [b, K, 2], ``dtype``.

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        ap = linksim.blocks.get("angle_power", kind="positioner", scenario=sc)
        ap.offset_db                                  # power calibration [dB]
    """

    name, task, needs = "angle_power", "position", ("csi", "rsrp")

    def __init__(self, oversampling: int = 4, fit_drops: int = 64, seed: int | None = None, scenario=None,
                 precision: str | None = None, device=None):
        super().__init__(precision, device)
        self.oversampling = positive_int(oversampling, "angle_power: oversampling")
        self.fit_drops = positive_int(fit_drops, "angle_power: fit_drops")
        seed = scenario.run.seed if seed is None and scenario is not None else (seed or 0)
        obs, info = draw_fit_drops(scenario, "position", self.fit_drops, seed, "angle_power")
        pl = -info["gain_db"].double()
        self.carrier_hz = scenario.channel.carrier_hz
        self.offset_db = float((rsrp_total_db(obs["rsrp"].double()) + pl).mean())
        self.register_buffer("beams", dft_codebook(scenario.channel, self.oversampling, self.device, self.cdtype),
                             persistent=False)
        self.register_buffer("dirs", beam_directions(scenario.channel, self.oversampling).to(self.device, self.dtype),
                             persistent=False)

    def forward(self, obs: dict) -> torch.Tensor:
        best = beam_power(self.pick(obs, "csi"), self.beams).argmax(-1)                # [b, K]
        uv = self.dirs[best]                                                           # [b, K, 2]
        x = (1 - uv.square().sum(-1)).clamp_min(0).sqrt()
        local = torch.stack([x, uv[..., 0], uv[..., 1]], -1)
        rot = _rotation(self.pick(obs, "bs_orientation"))                              # [b, 3, 3]
        d = torch.einsum("bij,bkj->bki", rot, local)
        phi = torch.atan2(d[..., 1], d[..., 0])
        pl = -(rsrp_total_db(self.pick(obs, "rsrp")) - self.offset_db)
        d3d = torch.pow(10.0, (pl - 13.54 - 20 * math.log10(self.carrier_hz / 1e9)) / 39.08)
        dh = self.pick(obs, "bs_height")[:, None] - UT_HEIGHT_M
        r = (d3d.square() - dh.square()).clamp_min(MIN_DISTANCE_M ** 2).sqrt()
        return torch.stack([r * phi.cos(), r * phi.sin()], -1).to(self.dtype)


def fingerprint(obs: dict, feature: str, dtype) -> torch.Tensor:
    r"""The k-NN fingerprint of every user, ``[b, K, M]``: ``"rsrp"``: the beam RSRP vector [dB];
    ``"csi"``: the beam power profile of the CSI over the orthonormal DFT beams, normalised to
    its sum, in dB (the angle signature without the level)."""
    if feature == "rsrp":
        return obs["rsrp"].to(dtype)
    h = obs["csi"]
    m = h.shape[-2]
    beams = torch.fft.fft(torch.eye(m, dtype=h.dtype, device=h.device), norm="ortho")
    g = beam_power(h, beams)
    return (10 * torch.log10((g / g.sum(-1, keepdim=True)).clamp_min(1e-12))).to(dtype)


@register_block("knn", "positioner")
class KNNFingerprint(SensingBlock):
    r"""k-nearest-neighbour fingerprinting on a training set of labelled drops.

    .. math::
        \hat{x} = \frac1k \sum_{i \in \mathcal{N}_k(f)} x_i, \qquad
        \mathcal{N}_k(f) = \text{the } k \text{ training fingerprints nearest to } f \text{ (Euclidean)}

    The training set: every user of ``fit_drops`` drops of the ``[position]`` table (its users,
    SNR, LOS rule) drawn from ``seed``, with their fingerprints (:func:`fingerprint`) and true
    positions. The same seed gives the same set; with ``k = 1`` a training fingerprint is
    placed exactly at its own position.

    :param k: neighbours averaged
    :param feature: ``"rsrp"`` (beam RSRP vector, default) or ``"csi"`` (beam power profile)
    :param fit_drops: drops of the training set
    :param seed: its seed (``None``: the scenario's ``run.seed``)
    :param scenario: the scenario (required; :func:`linksim.blocks.get` passes it)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live

    :input obs: dict with ``rsrp`` [b, K, M] dB (``feature = "rsrp"``) or ``csi`` [b, K, M, F].

    :output xy: [b, K, 2], ``dtype``.

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        knn = linksim.blocks.get("knn", kind="positioner", scenario=sc, k=5)
        knn.train_xy.shape                               # [256 * 4, 2]
    """

    name, task = "knn", "position"

    def __init__(self, k: int = 5, feature: str = "rsrp", fit_drops: int = 256, seed: int | None = None,
                 scenario=None, precision: str | None = None, device=None):
        super().__init__(precision, device)
        from ...errors import LinksimError
        if feature not in ("rsrp", "csi"):
            raise LinksimError(f"knn: feature must be 'rsrp' or 'csi', got {feature!r}")
        self.k, self.feature = positive_int(k, "knn: k"), feature
        self.needs = (feature,)
        self.fit_drops = positive_int(fit_drops, "knn: fit_drops")
        seed = scenario.run.seed if seed is None and scenario is not None else (seed or 0)
        obs, info = draw_fit_drops(scenario, "position", self.fit_drops, seed, "knn")
        f = fingerprint(obs, feature, torch.float32)
        self.register_buffer("train_f", f.reshape(-1, f.shape[-1]).to(self.device, self.dtype), persistent=False)
        self.register_buffer("train_xy", info["position"].reshape(-1, 2).to(self.device, self.dtype),
                             persistent=False)

    def forward(self, obs: dict) -> torch.Tensor:
        obs = {n: self.cast(obs[n]) for n in (self.feature,) if n in obs}
        f = fingerprint(obs, self.feature, self.dtype)
        flat = f.reshape(-1, f.shape[-1])
        d = torch.cdist(flat, self.train_f)
        idx = d.topk(min(self.k, d.shape[-1]), dim=-1, largest=False).indices
        return self.train_xy[idx].mean(1).reshape(*f.shape[:-1], 2)
