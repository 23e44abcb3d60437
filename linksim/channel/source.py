"""ChannelSource: time-evolving OFDM channels of K single-antenna users and one BS planar array.

Output convention (all tasks): ``H`` complex64 ``[batch, time, users, bs_antennas, subcarriers]``,
``H[b, t, k, m, f]`` = gain between user ``k`` and BS antenna ``m`` on subcarrier ``f`` at time ``t``.
TDD reciprocity: the downlink matrix of a precoder is ``H[:, t, :, :, f]`` ``[b, K, M]``; the uplink
matrix of a detector is its transpose ``[b, M, K]``.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch

from ..config import check_device, derive_seed, dtypes, generator
from ..errors import LinksimError
from ..scenario import Scenario

C_LIGHT = 299_792_458.0


class ChannelSource:
    """Draws batches of channels for a scenario; bit-identical for the same seed.

    ``model = "uma"`` (``"umi"``, ``"rma"``): Sionna's 3GPP TR 38.901 UMa (UMi street canyon, RMa)
    system-level model in a single-sector drop (NLOS by default, outdoor users, path loss and
    shadowing off). History and future come from one Sionna call, so only the Doppler phases evolve
    across time samples (:class:`~linksim.channel.tr38901.SystemLevel`).

    ``model = "cdl"``: Sionna's TR 38.901 CDL profile ``cdl_profile`` (A..E) scaled to
    ``delay_spread_s``; each user is an independent CDL link (:class:`~linksim.channel.tr38901.CDLLinks`).

    The 3GPP channels are normalised per user of each drop to unit average gain per entry (mean of
    ``|H|^2`` over time, antennas and subcarriers).

    ``model = "rayleigh"``: i.i.d. CN(0, 1) entries; across time each entry follows Clarke's model
    (sum of 32 sinusoids with uniform angles), so lag correlation is J0(2 pi f_D dt) in expectation.

    :param scenario: validated :class:`~linksim.scenario.Scenario` (``[channel]`` and ``[run]``:
        device and precision of the output)
    :param seed: base seed (defaults to ``scenario.run.seed``); batch ``i`` of :meth:`stream` and
        :meth:`sample` calls without ``seed`` use ``derive_seed(seed, "batch", i)``
    :param device: overrides ``scenario.run.device``

    :output H: [batch, time, users, bs_antennas, subcarriers], complex64 (complex128 with
        ``run.precision = "double"``), from :meth:`sample`.

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        sc = linksim.load_scenario("scenarios/quick.toml")
        src = linksim.ChannelSource(sc, seed=0)
        H = src.sample(8, speed_kmh=60.0)      # [8, 20, 4, 16, 48] complex64
        h_dl = H[:, 0, :, :, 24]               # downlink [8, K=4, M=16] at the centre subcarrier
        h_ul = h_dl.mT                         # uplink [8, M, K]
    """

    def __init__(self, scenario: Scenario, seed: int | None = None, device: str | None = None):
        self.scenario = scenario
        self.ch = scenario.channel
        self.seed = scenario.run.seed if seed is None else int(seed)
        self.device = check_device(device or scenario.run.device)
        self.precision = scenario.run.precision
        self.dtype, self.cdtype = dtypes(self.precision)
        self._count = 0
        self._sionna = None   # the Sionna generator (linksim.channel.tr38901), built on first use

    # ------------------------------------------------------------------ public
    def sample(self, batch: int, speed_kmh: float | tuple[float, float] | None = None,
               num_users: int | None = None, num_time: int | None = None,
               seed: int | None = None) -> torch.Tensor:
        """One batch of channels.

        :param batch: number of drops
        :param speed_kmh: user speed [km/h]; a ``(low, high)`` pair draws each user's speed uniformly;
            default ``scenario.channel.speed_kmh``. Directions are uniform in the horizontal plane.
        :param num_users: K (default ``scenario.prediction.num_users``)
        :param num_time: time samples spaced ``sample_spacing_s`` (default history + horizon)
        :param seed: explicit seed for this batch (else the source's running counter)
        :returns: ``H`` complex (complex64, or complex128 with ``run.precision = "double"``) ``[batch, num_time, K, M, F]`` on ``run.device``
        """
        b, v_lo, v_hi, k, t, seed = self._args(batch, speed_kmh, num_users, num_time, seed)
        if self.ch.model == "rayleigh":
            return self._rayleigh_batch(b, v_lo, v_hi, k, t, seed)
        return self._tr38901_batch(b, v_lo, v_hi, k, t, seed)

    def _args(self, batch, speed_kmh, num_users, num_time, seed) -> tuple:
        """(batch, v_lo, v_hi [m/s], K, T, seed) of a call, checked; draws the running seed."""
        if batch <= 0:
            raise LinksimError(f"batch must be > 0, got {batch}")
        speed = self.ch.speed_kmh if speed_kmh is None else speed_kmh
        lo, hi = (speed, speed) if isinstance(speed, (int, float)) else speed
        if lo < 0 or hi < lo:
            raise LinksimError(f"speed_kmh must be >= 0 (low <= high), got {speed_kmh!r}")
        cp = self.scenario.prediction
        k = cp.num_users if num_users is None else int(num_users)
        t = cp.history + cp.horizon if num_time is None else int(num_time)
        if k <= 0 or t <= 0:
            raise LinksimError(f"num_users and num_time must be > 0, got {k} and {t}")
        if seed is None:
            seed = derive_seed(self.seed, "batch", self._count)
            self._count += 1
        return batch, lo / 3.6, hi / 3.6, k, t, seed

    def sample_with_info(self, batch: int, speed_kmh: float | tuple[float, float] | None = None,
                         num_users: int | None = None, num_time: int | None = None,
                         seed: int | None = None, los: bool | str | None = None) -> tuple[torch.Tensor, dict]:
        r"""One batch of channels and what they are made of: the labels of sensing tasks and the
        truth behind their side information (GNSS, RSRP).

        ``H`` is normalised as :meth:`sample` returns it (with ``los=None`` the very same tensor
        for the same arguments); the un-normalised channel, path loss and shadowing applied, is

        .. math::
            \tilde{H}_{b,t,k,m,f} = 10^{P_{b,k}/20}\, H_{b,t,k,m,f}, \qquad
            P_{b,k} = G_{b,k} + 10\log_{10}\overline{|H^{\mathrm{ss}}_{b,\cdot,k}|^2}

        with :math:`G = -\mathrm{PL} + \mathrm{SF}` the large-scale gain in dB and the second
        term the mean power of the drop's small-scale channel :math:`H^{\mathrm{ss}}` (Sionna's,
        before normalisation) over time, antennas and subcarriers.

        :param batch, speed_kmh, num_users, num_time, seed: as :meth:`sample`
        :param los: ``None``: the scenario's ``channel.los``; ``True`` / ``False``: every outdoor
            user LOS / NLOS; ``"random"``: each user's state drawn by the TR 38.901 LOS
            probability of its distance (7.4.2)

        :output H: [batch, num_time, K, M, F], complex (as :meth:`sample`)
        :output info: dict of real tensors on ``run.device`` in ``run.precision``'s real dtype
            (``los`` bool): ``los`` [b,K]; ``position`` [b,K,2] UT minus BS, horizontal [m];
            ``ut_height`` [b,K], ``bs_height`` [b] [m]; ``distance_2d``, ``distance_3d`` [b,K] [m];
            ``pathloss_db`` (basic PL), ``shadowing_db``, ``gain_db`` (:math:`G`), ``power_db``
            (:math:`P`) [b,K]; ``bs_orientation`` [b,3] (yaw, downtilt, slant) [rad];
            ``velocity`` [b,K,3] [m/s]. A one-line ``LinksimError`` for models without a topology
            (``cdl``, ``rayleigh``).

        .. rubric:: Examples

        .. code-block:: python

            import linksim
            sc = linksim.load_scenario("scenarios/quick.toml")
            H, info = linksim.ChannelSource(sc).sample_with_info(4, num_time=1, seed=1, los="random")
            H.shape, info["los"].shape, info["position"].shape   # [4,1,4,16,48], [4,4], [4,4,2]
            H_un = H * 10 ** (info["power_db"][:, None, :, None, None] / 20)   # path loss applied
        """
        from .tr38901 import SYSTEM_LEVEL

        if self.ch.model not in SYSTEM_LEVEL:
            raise LinksimError(f"channel.model = {self.ch.model!r} has no topology (positions, LOS "
                               f"states, path loss): use one of {', '.join(SYSTEM_LEVEL)}")
        if los is not None and los not in (True, False, "random"):
            raise LinksimError(f"los must be None, True, False or 'random', got {los!r}")
        args = self._args(batch, speed_kmh, num_users, num_time, seed)
        h, info = self._tr38901_raw(*args, los=los, info=True)
        power = 10 * torch.log10(h.abs().square().mean(dim=(1, 3, 4)).clamp_min(1e-30))
        info = {k: v.to(self.device) if v.dtype == torch.bool else v.to(self.device, self.dtype)
                for k, v in info.items()}
        info["power_db"] = info["gain_db"] + power.to(self.device, self.dtype)
        return _normalise_per_user(h).to(self.cdtype).contiguous(), info

    def stream(self, num_samples: int, batch: int, **kwargs) -> Iterator[torch.Tensor]:
        """Yield batches until ``num_samples`` drops have been produced (last batch may be smaller)."""
        done = 0
        while done < num_samples:
            b = min(batch, num_samples - done)
            yield self.sample(b, **kwargs)
            done += b

    # ------------------------------------------------------------------ 3GPP TR 38.901
    def _tr38901_raw(self, b, v_lo, v_hi, k, t, seed, **kwargs):
        if self._sionna is None:
            from .tr38901 import SYSTEM_LEVEL, CDLLinks, SystemLevel

            cls = SystemLevel if self.ch.model in SYSTEM_LEVEL else CDLLinks
            self._sionna = cls(self.ch, self.precision, str(self.device))
        return self._sionna(b, v_lo, v_hi, k, t, seed, **kwargs)

    def _tr38901_batch(self, b, v_lo, v_hi, k, t, seed):
        h = self._tr38901_raw(b, v_lo, v_hi, k, t, seed)
        return _normalise_per_user(h).to(self.cdtype).contiguous()

    # ------------------------------------------------------------------ Rayleigh
    def _rayleigh_batch(self, b, v_lo, v_hi, k, t, seed):
        g = generator(seed, self.device)
        m, f = self.ch.num_bs_antennas, self.ch.num_subcarriers
        shape = (b, k, m, f)
        dev = self.device
        if t == 1:
            z = torch.complex(torch.randn(shape, generator=g, device=dev, dtype=self.dtype),
                              torch.randn(shape, generator=g, device=dev, dtype=self.dtype))
            return (z / math.sqrt(2)).unsqueeze(1).to(self.cdtype)
        n_sin = 32
        speed = v_lo + (v_hi - v_lo) * torch.rand((b, k, 1, 1, 1), generator=g, dtype=torch.float64, device=dev)
        fd = speed * self.ch.carrier_hz / C_LIGHT                         # [b,k,1,1,1]
        alpha = 2 * math.pi * torch.rand(shape + (n_sin,), generator=g, dtype=torch.float64, device=dev)
        phi = 2 * math.pi * torch.rand(shape + (n_sin,), generator=g, dtype=torch.float64, device=dev)
        times = torch.arange(t, dtype=torch.float64, device=dev) * self.ch.sample_spacing_s
        out = []
        for tt in times:
            ph = 2 * math.pi * fd * torch.cos(alpha) * tt + phi
            out.append(torch.polar(torch.ones_like(ph), ph).sum(-1) / math.sqrt(n_sin))
        return torch.stack(out, 1).to(self.cdtype)


def _normalise_per_user(h: torch.Tensor) -> torch.Tensor:
    """Scale each (drop, user) to unit mean |h|^2 over time, antennas and subcarriers."""
    p = h.abs().square().mean(dim=(1, 3, 4), keepdim=True)
    return h / p.clamp_min(1e-30).sqrt()
