"""Sionna's 3GPP TR 38.901 channels for :class:`~linksim.channel.ChannelSource`.

Two generators, both returning the raw (not yet normalised) OFDM channel
``[batch, time, users, bs_antennas, subcarriers]`` of K single-antenna users and one BS planar
array (uplink convention of Sionna, so ``H[b, t, k, m, f]`` is user ``k`` -> BS antenna ``m``):

- :class:`SystemLevel`: the system-level models UMa, UMi and RMa with a single-sector topology and
  moving users (one call per drop, so only the Doppler phases evolve across time samples);
- :class:`CDLLinks`: the link-level CDL-A..E profiles, every user an independent CDL link.
"""
from __future__ import annotations

import math

import torch

from ..config import derive_seed, generator

#: ``[channel] model`` names served by :class:`SystemLevel` (Sionna class names as values)
SYSTEM_LEVEL = {"uma": "UMa", "umi": "UMi", "rma": "RMa"}
#: ``[channel] cdl_profile`` names (TR 38.901 Tables 7.7.1-1..5; D and E have a LOS path)
CDL_PROFILES = ("A", "B", "C", "D", "E")


def _arrays_and_freqs(ch, precision: str, device: str):
    """BS planar array (``bs_rows x bs_cols``, 38.901 pattern), single omni UT antenna, subcarriers."""
    from sionna.phy.channel import subcarrier_frequencies
    from sionna.phy.channel.tr38901 import PanelArray

    dual = ch.bs_polarization == "dual"
    bs = PanelArray(num_rows_per_panel=ch.bs_rows, num_cols_per_panel=ch.bs_cols,
                    polarization="dual" if dual else "single",
                    polarization_type="cross" if dual else "V",
                    antenna_pattern="38.901", carrier_frequency=ch.carrier_hz,
                    precision=precision, device=device)
    ut = PanelArray(num_rows_per_panel=1, num_cols_per_panel=1, polarization="single",
                    polarization_type="V", antenna_pattern="omni",
                    carrier_frequency=ch.carrier_hz, precision=precision, device=device)
    freqs = subcarrier_frequencies(ch.num_subcarriers, ch.subcarrier_spacing_hz,
                                   precision=precision, device=device)
    return bs, ut, freqs


class SystemLevel:
    r"""3GPP TR 38.901 UMa / UMi / RMa (Sionna) with a single-sector drop and moving users.

    For each drop, ``K`` users are placed uniformly in the sector of one BS
    (:func:`sionna.phy.channel.gen_single_sector_topology` with the model's own ISD, heights and
    minimum distance), each moving horizontally in a uniform direction with speed uniform in
    ``[v_lo, v_hi]``. One call of the Sionna model with ``num_time_samples = T`` and
    ``sampling_frequency = 1/sample_spacing_s`` gives the path coefficients, so the large-scale
    parameters and clusters are fixed within a drop and only the Doppler phases evolve:

    .. math::
        H_{t,k,m,f} = \sum_{p} a_{k,m,p}(t\,\Delta t)\, e^{-j 2\pi f_f \tau_{k,p}}

    Path loss and shadowing are off; ``los`` forces NLOS (``False``) or LOS (``True``) for the
    outdoor users (the call's ``los = "random"`` draws each user's state by the TR 38.901 LOS
    probability, 7.4.2, instead of the channel's setting); RMa users that are not indoor are outdoor, not in-car (``in_car = False``; the
    car penetration loss would only change path loss anyway).

    :param channel: the scenario's ``[channel]`` table (:class:`~linksim.scenario.Channel`) with
        ``model`` in ``"uma"``, ``"umi"``, ``"rma"``
    :param precision: ``"single"`` | ``"double"`` (Sionna's computation precision)
    :param device: torch device string

    :input batch: `int`, drops
    :input v_lo, v_hi: `float`, user speed range [m/s]
    :input num_users: `int`, K
    :input num_time: `int`, T time samples spaced ``sample_spacing_s``
    :input seed: `int`, sets ``sionna.phy.config.seed`` (same seed -> same channels)
    :input los: ``None`` (the channel's ``los``), ``True``, ``False`` or ``"random"`` (3GPP LOS
        probability per user)
    :input info: `bool`, also return :meth:`side_info` (default ``False``)

    :output h: [batch, num_time, num_users, bs_antennas, num_subcarriers], complex (Sionna's
        precision), not normalised; ``(h, info)`` with ``info=True``

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        from linksim.channel.tr38901 import SystemLevel
        sc = linksim.load_scenario("scenarios/quick-umi.toml")
        h = SystemLevel(sc.channel, "single", "cpu")(2, 10 / 3.6, 10 / 3.6, 4, 20, seed=0)
        h.shape                                  # (2, 20, 4, 16, 48)
    """

    def __init__(self, channel, precision: str, device: str):
        from sionna.phy.channel import tr38901

        self.ch, self.name, self.precision, self.device = channel, channel.model, precision, device
        bs, ut, self.freqs = _arrays_and_freqs(channel, precision, device)
        extra = {} if self.name == "rma" else {"o2i_model": "low"}
        self.model = getattr(tr38901, SYSTEM_LEVEL[self.name])(
            carrier_frequency=channel.carrier_hz, ut_array=ut, bs_array=bs, direction="uplink",
            enable_pathloss=False, enable_shadow_fading=False, precision=precision, device=device,
            **extra)
        self._topology_shape = None

    def __call__(self, batch: int, v_lo: float, v_hi: float, num_users: int, num_time: int,
                 seed: int, los=None, info: bool = False):
        import sionna.phy
        from sionna.phy.channel import cir_to_ofdm_channel, gen_single_sector_topology

        b, k = batch, num_users
        sionna.phy.config.seed = seed
        topo = gen_single_sector_topology(b, k, self.name, indoor_probability=self.ch.indoor_probability,
                                          min_ut_velocity=v_lo, max_ut_velocity=v_hi,
                                          precision=self.precision, device=self.device)
        if self._topology_shape not in (None, (b, k)):
            self.model.reset_topology()  # Sionna freezes topology shapes after the first call
        self._topology_shape = (b, k)
        extra = {}
        if self.name == "rma":
            extra["in_car"] = torch.zeros(b, k, dtype=torch.bool, device=self.device)
        self.model.set_topology(*topo, los=self.ch.los if los is None else los,
                                distance_2d_in=self._indoor_distance(b, k, seed), **extra)
        a, tau = self.model(num_time_samples=num_time, sampling_frequency=1.0 / self.ch.sample_spacing_s)
        h = cir_to_ofdm_channel(self.freqs, a, tau)      # [b, 1, M, K, 1, t, F]
        h = h[:, 0, :, :, 0].permute(0, 3, 2, 1, 4)      # [b, t, K, M, F]
        return (h, self.side_info()) if info else h

    def _indoor_distance(self, b: int, k: int, seed: int) -> torch.Tensor:
        r"""Each user's 2D indoor distance (TR 38.901 7.4.3.1: the smaller of two uniform draws on
        ``[min_2d_in, max_2d_in]``), drawn from a generator of the call's seed alone.

        Sionna draws these itself only on a model's first ``set_topology`` and reuses them
        afterwards, which makes a batch depend on what the process drew before; passed in, every
        batch is a function of its seed (Sionna's own generator is left untouched). Outdoor users
        ignore the value. [b, K] [m]
        """
        if self.ch.indoor_probability == 0.0:
            return torch.zeros(b, k, dtype=self.model._scenario.dtype, device=self.device)
        sc = self.model._scenario
        g = torch.Generator(device=self.device).manual_seed((int(seed) * 2 + 1) % 2**63)
        u = torch.rand(b, k, 2, generator=g, device=self.device, dtype=sc.dtype).min(dim=-1).values
        return sc.min_2d_in + u * (sc.max_2d_in - sc.min_2d_in)

    def side_info(self) -> dict:
        r"""What the drop just drawn is made of, read from Sionna's scenario (draws no random
        number, so the channels are those of a call without it).

        .. math::
            G_k = -\mathrm{PL}_k + \mathrm{SF}_k \ \text{[dB]}

        with :math:`\mathrm{PL}_k` the basic TR 38.901 path loss of user k (Table 7.4.1-1, LOS or
        NLOS by its state; O2I penetration of indoor users is not included) and
        :math:`\mathrm{SF}_k` its shadow fading (the large-scale parameter Sionna drew with the
        drop, whether or not the channel applies it).

        :output info: dict of real tensors on the model's device (``b`` drops, ``K`` users):
            ``los`` [b,K] bool; ``position`` [b,K,2] UT minus BS in the horizontal plane [m];
            ``ut_height`` [b,K], ``bs_height`` [b] [m]; ``distance_2d``, ``distance_3d`` [b,K] [m];
            ``pathloss_db``, ``shadowing_db``, ``gain_db`` [b,K]; ``bs_orientation`` [b,3] [rad]
            (yaw, downtilt, slant, TR 38.901 7.1); ``velocity`` [b,K,3] [m/s].
        """
        s = self.model._scenario
        pl = s.basic_pathloss[:, 0]
        sf = 10 * torch.log10(self.model._lsp.sf[:, 0])
        ut, bs = s.ut_loc, s.bs_loc[:, 0]
        return {"los": s.los[:, 0].clone(), "position": (ut[..., :2] - bs[:, None, :2]).clone(),
                "ut_height": ut[..., 2].clone(), "bs_height": bs[:, 2].clone(),
                "distance_2d": s.distance_2d[:, 0].clone(), "distance_3d": s.distance_3d[:, 0].clone(),
                "pathloss_db": pl.clone(), "shadowing_db": sf, "gain_db": sf - pl,
                "bs_orientation": s.bs_orientations[:, 0].clone(), "velocity": s.ut_velocities.clone()}


class CDLLinks:
    r"""3GPP TR 38.901 CDL (Sionna): every user is an independent CDL link to the BS array.

    CDL has no topology: the cluster delays, powers and angles are the profile's (delays scaled to
    the RMS delay spread ``delay_spread_s``), only the ray coupling, the initial phases and the
    velocity are random. ``batch * K`` links are drawn in one Sionna call and regrouped into
    ``K`` users per drop, so users of one drop share the profile but not the realisation. Each user
    moves horizontally in a uniform direction with speed uniform in ``[v_lo, v_hi]`` (Sionna's own
    velocity draw would also point up and down); the directions and speed fractions come from the
    seed alone, so a speed sweep moves the same links at other speeds. ``los`` and
    ``indoor_probability`` do not apply: profiles D and E have a LOS path, A-C do not.

    .. math::
        H_{t,k,m,f} = \sum_{p} a_{k,m,p}(t\,\Delta t)\, e^{-j 2\pi f_f \tau_p}

    :param channel: the scenario's ``[channel]`` table with ``model = "cdl"``, ``cdl_profile``
        and ``delay_spread_s``
    :param precision: ``"single"`` | ``"double"``
    :param device: torch device string

    :input batch, v_lo, v_hi, num_users, num_time, seed: as for :class:`SystemLevel`

    :output h: [batch, num_time, num_users, bs_antennas, num_subcarriers], complex, not normalised

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        from linksim.channel.tr38901 import CDLLinks
        sc = linksim.load_scenario("scenarios/quick-cdl.toml")
        h = CDLLinks(sc.channel, "single", "cpu")(2, 10 / 3.6, 10 / 3.6, 4, 20, seed=0)
        h.shape                                  # (2, 20, 4, 16, 48)
    """

    def __init__(self, channel, precision: str, device: str):
        self.ch, self.precision, self.device = channel, precision, device
        self.bs, self.ut, self.freqs = _arrays_and_freqs(channel, precision, device)

    def __call__(self, batch: int, v_lo: float, v_hi: float, num_users: int, num_time: int,
                 seed: int) -> torch.Tensor:
        import sionna.phy
        from sionna.phy.channel import cir_to_ofdm_channel
        from sionna.phy.channel.tr38901 import CDL

        n = batch * num_users
        g = generator(derive_seed(seed, "cdl-velocity"))
        u, phi = torch.rand(2, n, generator=g, dtype=torch.float64)
        speed = v_lo + (v_hi - v_lo) * u
        phi = 2 * math.pi * phi
        vel = torch.stack([speed * phi.cos(), speed * phi.sin(), torch.zeros_like(speed)], -1)
        sionna.phy.config.seed = seed
        # the velocity is a constructor argument: one light model per call (the profile is read
        # from a small JSON file; nothing is compiled)
        model = CDL(self.ch.cdl_profile, self.ch.delay_spread_s, self.ch.carrier_hz,
                    ut_array=self.ut, bs_array=self.bs, direction="uplink", ut_velocity=vel,
                    precision=self.precision, device=self.device)
        a, tau = model(n, num_time, 1.0 / self.ch.sample_spacing_s)   # a [n, 1, M, 1, 1, paths, t]
        h = cir_to_ofdm_channel(self.freqs, a, tau)[:, 0, :, 0, 0]     # [n, M, t, F]
        m, f = h.shape[1], h.shape[-1]
        return h.reshape(batch, num_users, m, num_time, f).permute(0, 3, 1, 2, 4)  # [b, t, K, M, F]
