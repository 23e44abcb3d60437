r"""Side information a link has beside its CSI, made from the drops of
:meth:`~linksim.channel.ChannelSource.sample_with_info`: the modalities sensing tasks and agents
read. The channel layer knows no task: a caller names the SNR, the GNSS error and the history.

Modalities (``MODALITIES``; keys of :func:`observe`'s dict, ``b`` drops, ``K`` users):

- ``csi``: [b,K,M,F] complex, the uplink CSI at the last history sample, normalised to unit
  average gain per entry, with CN(0, 10^(-snr/10)) noise per entry;
- ``csi_history``: [b,L,K,M,F] complex, the ``L`` noisy samples up to it (oldest first);
- ``gnss``: [b,K,2] real, the UT's horizontal position relative to the BS [m], reported with
  i.i.d. N(0, gnss_std_m^2) error per coordinate;
- ``rsrp``: [b,K,M] real, beam RSRP [dB] of a sounding sweep over the M orthogonal DFT beams
  (:func:`dft_codebook` with oversampling 1), measured on the noisy CSI and scaled by the user's
  un-normalised power: ``rsrp_b = P + 10 log10(mean_f |w_b^T y_f|^2)``.

Beams: the BS is a ``bs_rows x bs_cols`` UPA with half-wavelength spacing (Sionna's
``PanelArray``); element ``m`` sits at the integer grid position ``(n_y, n_z)``. An oversampled
2-D DFT codebook (3GPP Type-I style) steers to the direction cosines ``(u, v)`` of a grid,

.. math::
    w_{b,m} = \frac{1}{\sqrt{M}} e^{-j\pi (n_{y,m} u_b + n_{z,m} v_b)}, \quad
    u_b \in \{-1 + \tfrac{2p}{O C}\}_{p < OC}, \ v_b \in \{-1 + \tfrac{2q}{O R}\}_{q < OR}

and the gain of beam ``b`` on a channel ``h [M, F]`` is :math:`\frac1F\sum_f |w_b^T h_f|^2`
(:func:`beam_power`). With ``O = 1`` the M beams are an orthonormal basis, so their gains sum to
:math:`\|h\|^2/F`.
"""
from __future__ import annotations

import functools
import math

import torch

from ..errors import LinksimError

MODALITIES = {
    "csi": "uplink CSI snapshot [b,K,M,F] (noisy, normalised)",
    "csi_history": "noisy CSI history [b,L,K,M,F]",
    "gnss": "GNSS position report [b,K,2] m (noisy)",
    "rsrp": "beam RSRP of a DFT sounding sweep [b,K,M] dB",
}


def parse_modalities(text: str) -> tuple[str, ...]:
    """The modality names of a comma-separated list (``"csi,gnss"``), checked.

    :input text: str. Names from :data:`MODALITIES`, comma-separated, no repeats.
    :output names: tuple of str, in the given order; a one-line ``LinksimError`` naming an
        unknown or repeated name, or an empty list.

    .. rubric:: Examples

    .. code-block:: python

        from linksim.channel.modalities import parse_modalities
        parse_modalities("csi, gnss")          # ('csi', 'gnss')
    """
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    bad = [n for n in names if n not in MODALITIES]
    if bad:
        raise LinksimError(f"unknown modality {bad[0]!r} (known: {', '.join(MODALITIES)})")
    if not names or len(set(names)) != len(names):
        raise LinksimError(f"modalities {text!r}: give one or more distinct names of {', '.join(MODALITIES)}")
    return names


def modalities_ok(text: str) -> bool:
    """Whether ``text`` is a valid modality list (a scenario-table check)."""
    try:
        parse_modalities(text)
    except LinksimError:
        return False
    return True


@functools.lru_cache(maxsize=16)
def _grid(rows: int, cols: int, dual: bool, carrier_hz: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    from sionna.phy.channel.tr38901 import PanelArray

    arr = PanelArray(num_rows_per_panel=rows, num_cols_per_panel=cols,
                     polarization="dual" if dual else "single",
                     polarization_type="cross" if dual else "V", antenna_pattern="38.901",
                     carrier_frequency=carrier_hz, precision="double", device="cpu")
    half = 299_792_458.0 / carrier_hz / 2
    pos = arr.ant_pos.double()
    ny = torch.round((pos[:, 1] - pos[:, 1].min()) / half).long()
    nz = torch.round((pos[:, 2] - pos[:, 2].min()) / half).long()
    return tuple(ny.tolist()), tuple(nz.tolist())


def element_grid(channel) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer grid positions ``(n_y, n_z)`` [M] (float64, CPU) of the BS elements of a
    ``[channel]`` table, in Sionna's antenna order (both polarisations share a position)."""
    ny, nz = _grid(channel.bs_rows, channel.bs_cols, channel.bs_polarization == "dual", float(channel.carrier_hz))
    return (torch.tensor(ny, dtype=torch.float64, device="cpu"),
            torch.tensor(nz, dtype=torch.float64, device="cpu"))


def beam_directions(channel, oversampling: int) -> torch.Tensor:
    """Direction cosines ``(u, v)`` of the codebook's beams, [O^2 R C, 2] float64 on the CPU;
    beam ``b = p * (O R) + q`` steers to ``(u_p, v_q)`` (module docstring)."""
    o = int(oversampling)
    if o < 1:
        raise LinksimError(f"oversampling must be an integer >= 1, got {oversampling!r}")
    nu, nv = o * channel.bs_cols, o * channel.bs_rows
    u = -1 + 2 * torch.arange(nu, dtype=torch.float64, device="cpu") / nu
    v = -1 + 2 * torch.arange(nv, dtype=torch.float64, device="cpu") / nv
    return torch.stack(torch.meshgrid(u, v, indexing="ij"), -1).reshape(-1, 2)


def dft_codebook(channel, oversampling: int = 1, device="cpu", dtype=torch.complex64) -> torch.Tensor:
    r"""The oversampled 2-D DFT codebook of the BS array (module docstring for the equation).

    :param channel: the scenario's ``[channel]`` table (array shape, polarisation, carrier)
    :param oversampling: ``O`` per dimension (``1``: the M orthogonal beams)
    :param device: where the codebook lives
    :param dtype: its complex dtype

    :output w: [B, M], ``dtype``. Unit-norm beams, ``B = O^2 * bs_rows * bs_cols``.

    .. rubric:: Examples

    .. code-block:: python

        import linksim, torch
        from linksim.channel.modalities import dft_codebook
        sc = linksim.load_scenario("scenarios/quick.toml")
        w = dft_codebook(sc.channel, 1)                        # [16, 16], orthonormal rows
        assert torch.allclose(w @ w.mH, torch.eye(16, dtype=w.dtype), atol=1e-5)
    """
    ny, nz = element_grid(channel)
    d = beam_directions(channel, oversampling)
    phase = -math.pi * (d[:, :1] * ny[None] + d[:, 1:] * nz[None])           # [B, M]
    w = torch.polar(torch.ones_like(phase), phase) / math.sqrt(ny.numel())
    return w.to(device=device, dtype=dtype)


def beam_power(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    r"""Gain of every beam on a channel, averaged over subcarriers.

    .. math::
        g_b = \frac{1}{F} \sum_{f} \Big| \sum_m w_{b,m} h_{m,f} \Big|^2

    :input h: [..., M, F], complex. Channels (user k's row of ``H``).
    :input w: [B, M], complex. Beams (:func:`dft_codebook`).

    :output g: [..., B], real (``h``'s real dtype).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.channel.modalities import beam_power
        h = torch.randn(2, 4, 16, 48, dtype=torch.complex64)      # [b, K, M, F]
        w = torch.eye(16, dtype=torch.complex64)                   # one beam per antenna
        g = beam_power(h, w)                                       # [2, 4, 16]
        assert torch.allclose(g, h.abs().square().mean(-1))
    """
    y = torch.einsum("bm,...mf->...bf", w.to(device=h.device, dtype=h.dtype), h)
    return y.abs().square().mean(-1)


def observe(h: torch.Tensor, info: dict, snr_db: float, gnss_std_m: float, gen: torch.Generator,
            rsrp_beams: torch.Tensor) -> dict:
    r"""Every modality of a batch of drops (module docstring), drawn in a fixed order (history
    noise, then GNSS error), so a modality's values do not depend on which others are used.

    .. math::
        Y_t = H_t + N_t,\ N_t \sim \mathcal{CN}(0, 10^{-\mathrm{snr}/10} I); \quad
        \hat{x} = x + e,\ e \sim \mathcal{N}(0, \sigma_{\mathrm{GNSS}}^2 I); \quad
        \mathrm{rsrp}_b = P + 10\log_{10} \tfrac1F \textstyle\sum_f |w_b^T y_f|^2

    :input h: [b, L, K, M, F], complex. The normalised history (:meth:`ChannelSource.sample_with_info`).
    :input info: dict. Its side information (``position`` [b,K,2], ``power_db`` [b,K]).
    :input snr_db: float. CSI SNR [dB].
    :input gnss_std_m: float. GNSS error std per coordinate [m] (>= 0).
    :input gen: torch.Generator on ``h``'s device.
    :input rsrp_beams: [B, M], complex. The sounding codebook (:func:`dft_codebook`, O = 1).

    :output obs: dict with ``csi_history`` [b,L,K,M,F], ``csi`` [b,K,M,F] (complex, ``h``'s
        dtype), ``gnss`` [b,K,2], ``rsrp`` [b,K,B] (real).

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        from linksim.channel.modalities import dft_codebook, observe
        from linksim.config import generator
        sc = linksim.load_scenario("scenarios/quick.toml")
        h, info = linksim.ChannelSource(sc).sample_with_info(2, num_time=1, seed=0, los="random")
        obs = observe(h, info, 20.0, 5.0, generator(1), dft_codebook(sc.channel))
        obs["rsrp"].shape                                     # [2, 4, 16]
    """
    real = info["position"].dtype
    std = math.sqrt(10 ** (-snr_db / 10) / 2)
    noise = torch.complex(torch.randn(h.shape, generator=gen, device=h.device, dtype=real),
                          torch.randn(h.shape, generator=gen, device=h.device, dtype=real))
    y = h + (std * noise).to(h.dtype)
    pos = info["position"]
    gnss = pos + gnss_std_m * torch.randn(pos.shape, generator=gen, device=pos.device, dtype=real)
    csi = y[:, -1]
    rsrp = info["power_db"][..., None] + 10 * torch.log10(beam_power(csi, rsrp_beams).clamp_min(1e-30))
    return {"csi_history": y, "csi": csi, "gnss": gnss, "rsrp": rsrp.to(real)}




def observed_drops(scenario, n: int, seed: int, num_users: int, history: int, snr_db: float,
                   gnss_std_m: float, los="random", batch: int = 32) -> tuple[dict, dict]:
    """``n`` drops with their modalities and side information, drawn on the CPU in single
    precision from ``scenario``'s channel: the data classical blocks fit themselves on (and a
    function of ``seed`` only).

    :param scenario: the scenario (its ``[channel]``)
    :param n: drops
    :param seed: seed of the drops (channels, then noise and GNSS errors)
    :param num_users: K per drop
    :param history: L time samples per drop (the last one is ``csi``)
    :param snr_db: CSI SNR [dB]
    :param gnss_std_m: GNSS error std [m]
    :param los: the LOS rule of :meth:`~linksim.channel.ChannelSource.sample_with_info`
    :param batch: drops per Sionna call

    :output obs: dict of :func:`observe`'s modalities, ``n`` drops along the first dim
    :output info: dict of the side information, the same drops

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        from linksim.channel.modalities import observed_drops
        sc = linksim.load_scenario("scenarios/quick.toml")
        obs, info = observed_drops(sc, 8, seed=1, num_users=4, history=1, snr_db=20.0, gnss_std_m=5.0)
        obs["csi"].shape, info["los"].shape                   # [8, 4, 16, 48], [8, 4]
    """
    from ..config import derive_seed, generator
    from .source import ChannelSource

    sc = scenario.replace(run={"device": "cpu", "precision": "single"})
    src = ChannelSource(sc, seed=seed)
    beams = dft_codebook(sc.channel, 1)
    parts = []
    for i, lo in enumerate(range(0, int(n), batch)):
        b = min(batch, int(n) - lo)
        h, info = src.sample_with_info(b, num_users=num_users, num_time=history,
                                       seed=derive_seed(seed, "drops", i), los=los)
        obs = observe(h, info, snr_db, gnss_std_m, generator(derive_seed(seed, "noise", i)), beams)
        parts.append((obs, info))
    cat = lambda key, j: torch.cat([p[j][key] for p in parts])  # noqa: E731
    return {k: cat(k, 0) for k in parts[0][0]}, {k: cat(k, 1) for k in parts[0][1]}


__all__ = ["MODALITIES", "beam_directions", "beam_power", "dft_codebook", "element_grid", "modalities_ok",
           "observe", "observed_drops", "parse_modalities"]
