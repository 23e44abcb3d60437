"""Multi-user MISO downlink precoders, the DPC sum-capacity bound, and shared rate helpers.

Conventions (as in Sionna and :mod:`linksim.blocks.registry`):

- ``h`` ``[b, K, M]`` complex is the downlink channel: row ``h[:, k, :]`` (written ``h_k``, a
  ``1 x M`` row) is user k's channel from the M base-station antennas.
- ``w`` ``[b, M, K]`` complex is the precoder: column ``w[:, :, k]`` (``w_k``) carries user k's
  unit-energy symbol. User k receives ``y_k = h_k w s + n_k`` with ``n_k ~ CN(0, noise_var)``.
- ``p_tx`` and ``noise_var`` are a Python float, a 0-d tensor, or a ``[b]`` tensor (one value per
  sample). The power budget is total (sum) power: ``sum |w|^2 <= p_tx`` per sample.

Every precoder is a :class:`torch.nn.Module` called as ``precoder(h, p_tx, noise_var) -> w``; it
computes internally in complex128 and returns complex64. All blocks are vectorised over the batch.

Closed-form precoders (``zf``, ``rzf``, ``mrt``) and :func:`structured_beamformer` are differentiable;
``wmmse`` and ``dpc_bound`` are iterative and run under ``torch.no_grad()``.

Implementation note: every precoder here lies in the row space of ``h``, ``W = h^H T`` with a small
``T [b, K, K]`` (this holds for ZF/RZF/MRT, for every WMMSE iterate, and for the optimal structure).
The iterative algorithms therefore work on the Gram matrix ``G = h h^H [b, K, K]`` only, so their
cost per iteration does not grow with M.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import register_block

__all__ = [
    "sinr", "sum_rate", "structured_beamformer", "wmmse_p_lambda", "waterfill",
    "ZF", "RZF", "MRT", "WMMSE", "DPCBound",
]

_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _c128(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128)


def _per_sample(x, b: int, device) -> torch.Tensor:
    """A float / 0-d / ``[b]`` (or ``[b,1,...]``) value as a float64 tensor ``[b]``."""
    t = torch.as_tensor(x, dtype=torch.float64, device=device)
    if t.numel() == 1:
        return t.reshape(()).expand(b)
    t = t.reshape(-1)
    if t.numel() != b:
        raise ValueError(f"expected a scalar or {b} values per batch, got shape {tuple(t.shape)}")
    return t


def _gram(h: torch.Tensor) -> torch.Tensor:
    """``G = h h^H`` ``[b, K, K]``; ``G[k, j] = h_k h_j^H``."""
    return h @ h.mH


def _eye(k: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(k, dtype=like.dtype, device=like.device)


def _power_k(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Total power ``||h^H T||_F^2 = tr(T^H G T)`` ``[b]`` float64."""
    return (t.conj() * (g @ t)).sum((-2, -1)).real


def _scale_to_power(w: torch.Tensor, p_tx: torch.Tensor) -> torch.Tensor:
    """Scale each sample of ``w [b, M, K]`` to total power ``p_tx [b]`` (zero stays zero)."""
    pw = (w.real ** 2 + w.imag ** 2).sum((-2, -1))
    c = torch.sqrt(p_tx / pw.clamp_min(1e-300))
    return w * c[:, None, None]


# --------------------------------------------------------------------------------------------
# rate helpers
# --------------------------------------------------------------------------------------------

def sinr(h: torch.Tensor, w: torch.Tensor, noise_var) -> torch.Tensor:
    r"""Per-user SINR of linear precoding with single-user decoding.

    :math:`\mathrm{SINR}_k = |h_k w_k|^2 / (\sum_{j \ne k} |h_k w_j|^2 + \sigma^2)`.

    Input
    -----
    h : [b, K, M], complex
        Downlink channel (row k = user k).
    w : [b, M, K], complex
        Precoder (column k = user k's beam).
    noise_var : float or [b] tensor
        Noise variance :math:`\sigma^2` per user.

    Output
    ------
    : [b, K], torch.float64
        SINR (linear). Differentiable in ``h`` and ``w``.
    """
    h, w = _c128(h), _c128(w)
    b, k = h.shape[0], h.shape[1]
    s2 = _per_sample(noise_var, b, h.device)
    e = h @ w                                             # [b, K, K], e[k, j] = h_k w_j
    p = e.real ** 2 + e.imag ** 2
    sig = torch.diagonal(p, dim1=-2, dim2=-1)
    off = 1.0 - torch.eye(k, dtype=p.dtype, device=p.device)
    interf = (p * off).sum(-1)
    return sig / (interf + s2[:, None])


def sum_rate(h: torch.Tensor, w: torch.Tensor, noise_var) -> torch.Tensor:
    r"""Sum-rate :math:`\sum_k \log_2(1 + \mathrm{SINR}_k)` of linear precoding (see :func:`sinr`).

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    w : [b, M, K], complex
        Precoder.
    noise_var : float or [b] tensor
        Noise variance per user.

    Output
    ------
    : [b], torch.float64
        Sum-rate in bit/s/Hz per sample. Differentiable (usable as a training loss).
    """
    return torch.log1p(sinr(h, w, noise_var)).sum(-1) / _LN2


# --------------------------------------------------------------------------------------------
# optimal beamforming structure (Björnson, Bengtsson, Ottersten 2014)
# --------------------------------------------------------------------------------------------

def structured_beamformer(h: torch.Tensor, p: torch.Tensor, lam: torch.Tensor, noise_var,
                          p_tx) -> torch.Tensor:
    r"""Beamformer with the optimal structure (Björnson, Bengtsson & Ottersten 2014).

    .. math::
        \tilde w_k = (\sigma^2 I_M + \sum_j \lambda_j h_j^H h_j)^{-1} h_k^H,\qquad
        w_k = \sqrt{p_k'}\, \tilde w_k / \|\tilde w_k\|,\qquad
        p' = p \cdot p_\mathrm{tx} / \textstyle\sum_k p_k .

    ``p`` is rescaled to the budget (so ``sum |w|^2 = p_tx``); ``lam`` is used as given. For the
    sum-rate-optimal point ``lam`` are the dual uplink powers and satisfy ``sum(lam) = p_tx``
    (:func:`wmmse_p_lambda` returns them that way). ``lam = 0`` gives MRT directions, large equal
    ``lam`` approaches ZF. Computed in user space by the push-through identity
    ``(s2 I + h^H L h)^{-1} h^H = h^H (s2 I + L h h^H)^{-1}``.

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    p : [b, K], float
        Power per user, ``p_k >= 0`` (any scale; rescaled to ``p_tx``).
    lam : [b, K], float
        Structure parameters, ``lam_k >= 0``.
    noise_var : float or [b] tensor
        Noise variance :math:`\sigma^2`.
    p_tx : float or [b] tensor
        Total power budget.

    Output
    ------
    w : [b, M, K], torch.complex64
        Precoder with ``sum |w|^2 = p_tx``. Differentiable in ``p`` and ``lam`` (and ``h``).
    """
    h = _c128(h)
    b, k, _ = h.shape
    s2 = _per_sample(noise_var, b, h.device)
    ptx = _per_sample(p_tx, b, h.device)
    p = p.to(torch.float64)
    lam = lam.to(torch.float64)
    g = _gram(h)
    a = s2[:, None, None] * _eye(k, g) + lam[:, :, None].to(g.dtype) * g    # s2 I + diag(lam) G
    t = torch.linalg.solve(a, _eye(k, g).expand(b, k, k))
    wt = h.mH @ t                                                         # [b, M, K]
    nrm = torch.sqrt((wt.real ** 2 + wt.imag ** 2).sum(-2).clamp_min(1e-300))
    ps = p * (ptx / p.sum(-1).clamp_min(1e-300))[:, None]
    amp = torch.sqrt(ps.clamp_min(1e-30))
    w = wt * (amp / nrm)[:, None, :].to(wt.dtype)
    return w.to(torch.complex64)


def _mmse_receiver(h: torch.Tensor, w: torch.Tensor, s2: torch.Tensor):
    """MMSE receiver ``u [b,K]`` complex, MSE weight ``1/e [b,K]`` and rate for precoder ``w``."""
    e = h @ w
    pw = e.real ** 2 + e.imag ** 2
    k = pw.shape[-1]
    interf = (pw * (1.0 - torch.eye(k, dtype=pw.dtype, device=pw.device))).sum(-1) + s2[:, None]
    tot = pw.sum(-1) + s2[:, None]
    u = torch.diagonal(e, dim1=-2, dim2=-1) / tot
    return u, tot / interf


def wmmse_p_lambda(h: torch.Tensor, w: torch.Tensor, noise_var, p_tx):
    r"""Structure parameters ``(p, lam)`` of a given precoder (e.g. the WMMSE solution).

    ``p_k = ||w_k||^2``. ``lam`` from the WMMSE stationarity condition: with the MMSE receiver
    :math:`u_k = h_k w_k / (\sum_j |h_k w_j|^2 + \sigma^2)` and MSE weight
    :math:`\omega_k = 1/(1 - \overline{u_k} h_k w_k)`, a WMMSE fixed point satisfies
    :math:`w_k \propto (\mu I + \sum_j \omega_j |u_j|^2 h_j^H h_j)^{-1} h_k^H` with
    :math:`\mu p_\mathrm{tx} = \sigma^2 \sum_j \omega_j |u_j|^2`, hence

    .. math:: \lambda_k = \sigma^2 \omega_k |u_k|^2 / \mu
              = p_\mathrm{tx}\, \omega_k |u_k|^2 / \textstyle\sum_j \omega_j |u_j|^2 .

    At an exact WMMSE fixed point with full power, ``structured_beamformer(h, p, lam, ...)``
    reproduces ``w`` up to a per-column phase (same SINRs); for a partly converged ``w`` it is an
    approximation (the WMMSE tolerance 1e-3 gives sum-rates within a fraction of a percent).

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    w : [b, M, K], complex
        Precoder.
    noise_var : float or [b] tensor
        Noise variance.
    p_tx : float or [b] tensor
        Total power budget (``sum(lam) = p_tx``).

    Output
    ------
    p : [b, K], torch.float64
        Power per user.
    lam : [b, K], torch.float64
        Structure parameters, ``sum(lam) = p_tx``.
    """
    h, w = _c128(h), _c128(w)
    b = h.shape[0]
    s2 = _per_sample(noise_var, b, h.device)
    ptx = _per_sample(p_tx, b, h.device)
    p = (w.real ** 2 + w.imag ** 2).sum(-2)
    u, om = _mmse_receiver(h, w, s2)
    d = om * (u.real ** 2 + u.imag ** 2)
    lam = d * (ptx / d.sum(-1).clamp_min(1e-300))[:, None]
    return p, lam


# --------------------------------------------------------------------------------------------
# linear precoders
# --------------------------------------------------------------------------------------------

@register_block("zf", "precoder")
class ZF(nn.Module):
    r"""Zero-forcing precoder :math:`W \propto h^H (h h^H)^{-1}` with total-power normalisation.

    One common factor scales all columns so that ``sum |w|^2 = p_tx`` (equal effective gain
    :math:`|h_k w_k|^2 = p_\mathrm{tx}/\mathrm{tr}((h h^H)^{-1})` for every user, zero
    interference). Requires ``K <= M`` and a full-rank channel.

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    p_tx : float or [b] tensor
        Total power budget.
    noise_var : float or [b] tensor
        Noise variance (unused).

    Output
    ------
    w : [b, M, K], torch.complex64
        Precoder with ``sum |w|^2 = p_tx``.
    """

    def forward(self, h, p_tx, noise_var=None):
        h = _c128(h)
        b, k, _ = h.shape
        g = _gram(h)
        w = h.mH @ torch.linalg.solve(g, _eye(k, g).expand(b, k, k))
        return _scale_to_power(w, _per_sample(p_tx, b, h.device)).to(torch.complex64)


@register_block("rzf", "precoder")
class RZF(nn.Module):
    r"""Regularised ZF :math:`W \propto h^H (h h^H + (K \sigma^2 / P) I)^{-1}`, scaled to ``p_tx``.

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    p_tx : float or [b] tensor
        Total power budget ``P``.
    noise_var : float or [b] tensor
        Noise variance :math:`\sigma^2`.

    Output
    ------
    w : [b, M, K], torch.complex64
        Precoder with ``sum |w|^2 = p_tx``.
    """

    def forward(self, h, p_tx, noise_var):
        h = _c128(h)
        b, k, _ = h.shape
        ptx = _per_sample(p_tx, b, h.device)
        alpha = k * _per_sample(noise_var, b, h.device) / ptx
        g = _gram(h)
        a = g + alpha[:, None, None] * _eye(k, g)
        w = h.mH @ torch.linalg.solve(a, _eye(k, g).expand(b, k, k))
        return _scale_to_power(w, ptx).to(torch.complex64)


@register_block("mrt", "precoder")
class MRT(nn.Module):
    r"""Maximum-ratio transmission :math:`W \propto h^H`, scaled to ``p_tx`` (total power).

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    p_tx : float or [b] tensor
        Total power budget.
    noise_var : float or [b] tensor
        Noise variance (unused).

    Output
    ------
    w : [b, M, K], torch.complex64
        Precoder with ``sum |w|^2 = p_tx``.
    """

    def forward(self, h, p_tx, noise_var=None):
        h = _c128(h)
        return _scale_to_power(h.mH, _per_sample(p_tx, h.shape[0], h.device)).to(torch.complex64)


# --------------------------------------------------------------------------------------------
# WMMSE (Shi, Razaviyayn, Luo, He 2011)
# --------------------------------------------------------------------------------------------

@register_block("wmmse", "precoder")
class WMMSE(nn.Module):
    r"""WMMSE sum-rate maximisation (Shi et al. 2011) for the MISO downlink, total power budget.

    Alternates the MMSE receiver :math:`u_k`, the MSE weight :math:`\omega_k = 1/e_k` and the
    transmit update :math:`w_k = (\sum_j \omega_j |u_j|^2 h_j^H h_j + \mu I)^{-1} h_k^H u_k \omega_k`,
    where :math:`\mu \ge 0` is found by bisection so that the power constraint holds
    (``mu = 0`` when the unconstrained minimiser already fits). The update is evaluated in user
    space (``W = h^H T``) through an eigendecomposition of a ``K x K`` matrix, so the bisection
    costs O(K) per step. After each update the iterate is scaled to exactly ``p_tx`` (a common
    scale-up never lowers any SINR, so the sum-rate still never decreases).

    Initialisation: RZF (``init="rzf"``, default) or MRT (``init="mrt"``), scaled to ``p_tx``.
    Stopping, per sample: relative change of the sum-rate below ``tol`` or ``max_iter``
    iterations. Samples that have stopped are frozen while the others continue, so each sample's
    result is the one it would get alone.

    After each call, ``self.last_history`` ``[n+1, b]`` float64 holds the sum-rate (bit/s/Hz) of the
    initial point and of every iterate (frozen samples repeat their value) and
    ``self.last_iterations`` ``[b]`` int64 the number of updates each sample used.

    Parameters
    ----------
    tol : float
        Relative sum-rate change that stops a sample (default 1e-3).
    max_iter : int
        Maximum number of WMMSE updates (default 100).
    init : str
        ``"rzf"`` or ``"mrt"``.
    bisect_steps : int
        Bisection steps for :math:`\mu` (default 50 float64 halvings of a bracket of width at
        most the largest eigenvalue of the user-space matrix).

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    p_tx : float or [b] tensor
        Total power budget.
    noise_var : float or [b] tensor
        Noise variance (must be > 0).
    return_history : bool
        Also return ``last_history``.

    Output
    ------
    w : [b, M, K], torch.complex64
        Precoder with ``sum |w|^2 = p_tx``.
    history : [n+1, b], torch.float64
        Only with ``return_history=True``.
    """

    def __init__(self, tol: float = 1e-3, max_iter: int = 100, init: str = "rzf",
                 bisect_steps: int = 50):
        super().__init__()
        if init not in ("rzf", "mrt"):
            raise ValueError(f"wmmse: init must be 'rzf' or 'mrt', got {init!r}")
        self.tol, self.max_iter, self.init, self.bisect_steps = tol, int(max_iter), init, bisect_steps
        self.last_history: torch.Tensor | None = None
        self.last_iterations: torch.Tensor | None = None

    @staticmethod
    def _stats(g, t, s2):
        """MMSE receiver u, weight om and sum-rate [bit/s/Hz] of W = h^H T."""
        e = g @ t                                         # e[k, j] = h_k w_j
        pw = e.real ** 2 + e.imag ** 2
        k = pw.shape[-1]
        interf = (pw * (1.0 - torch.eye(k, dtype=pw.dtype, device=pw.device))).sum(-1) + s2[:, None]
        tot = pw.sum(-1) + s2[:, None]
        u = torch.diagonal(e, dim1=-2, dim2=-1) / tot
        om = tot / interf
        rate = torch.log(om).sum(-1) / _LN2
        return u, om, rate

    def _update(self, g, u, om, ptx):
        """Transmit update for fixed (u, om), in user space; returns T [b,K,K] at power ptx."""
        d = om * (u.real ** 2 + u.imag ** 2)                      # [b,K] >= 0
        sd = torch.sqrt(d)
        au = torch.abs(u)
        # y_k = c_k / sqrt(d_k) with c_k = u_k om_k  ->  sqrt(om_k) u_k/|u_k| (0 if u_k = 0)
        y = torch.where(au > 0, torch.sqrt(om) * u / au.clamp_min(1e-300), torch.zeros_like(u))
        s = sd[:, :, None] * g * sd[:, None, :]                   # D^1/2 G D^1/2
        s = 0.5 * (s + s.mH)
        lam, q = torch.linalg.eigh(s)                             # ascending, [b,K], [b,K,K]
        lam = lam.clamp_min(0.0)
        null = lam <= 1e-13 * lam[:, -1:].clamp_min(1e-300)
        x = q.mH * y[:, None, :]                                  # Q^H diag(y)
        a = (x.real ** 2 + x.imag ** 2).sum(-1)                   # [b,K]
        a = torch.where(null, torch.zeros_like(a), a)
        lam_nz = torch.where(null, torch.ones_like(lam), lam)

        al = a * lam
        p0 = (a / lam_nz).sum(-1)                                 # power at mu = 0+
        zero_mu = p0 <= ptx
        # power(mu) is decreasing, between sum(al)/(lam_max+mu)^2 and sum(al)/mu^2, so the
        # root lies in [max(0, r - lam_max), r] with r = sqrt(sum(al)/ptx)
        r = torch.sqrt(al.sum(-1) / ptx)
        lo = (r - lam[:, -1]).clamp_min(0.0)
        hi = r
        for _ in range(self.bisect_steps):
            mid = 0.5 * (lo + hi)
            den = lam + mid[:, None]
            over = (al / (den * den)).sum(-1) > ptx
            lo = torch.where(over, mid, lo)
            hi = torch.where(over, hi, mid)
        mu = torch.where(zero_mu, torch.zeros_like(hi), hi)
        den = lam_nz + mu[:, None]
        inv = torch.where(null, torch.zeros_like(lam), 1.0 / den)   # null directions: h^H D^1/2 q = 0
        t = sd[:, :, None].to(q.dtype) * (q @ (inv[:, :, None].to(q.dtype) * x))
        pw = _power_k(g, t)
        return t * torch.sqrt(ptx / pw.clamp_min(1e-300))[:, None, None]

    @torch.no_grad()
    def forward(self, h, p_tx, noise_var, return_history: bool = False):
        h = _c128(h)
        b, k, _ = h.shape
        ptx = _per_sample(p_tx, b, h.device)
        s2 = _per_sample(noise_var, b, h.device)
        g = _gram(h)
        eye = _eye(k, g)
        if self.init == "rzf":
            t = torch.linalg.solve(g + (k * s2 / ptx)[:, None, None] * eye, eye.expand(b, k, k))
        else:
            t = eye.expand(b, k, k).clone()
        t = t * torch.sqrt(ptx / _power_k(g, t).clamp_min(1e-300))[:, None, None]
        u, om, rate = self._stats(g, t, s2)
        hist = [rate]
        active = torch.ones(b, dtype=torch.bool, device=h.device)
        iters = torch.zeros(b, dtype=torch.int64, device=h.device)
        for _ in range(self.max_iter):
            t_new = self._update(g, u, om, ptx)
            u_new, om_new, rate_new = self._stats(g, t_new, s2)
            m = active
            t = torch.where(m[:, None, None], t_new, t)
            u = torch.where(m[:, None], u_new, u)
            om = torch.where(m[:, None], om_new, om)
            rel = (rate_new - rate).abs() / rate.abs().clamp_min(1e-12)
            rate = torch.where(m, rate_new, rate)
            iters = iters + m.to(torch.int64)
            hist.append(rate)
            active = active & ~(rel < self.tol)
            if not bool(active.any()):
                break
        self.last_history = torch.stack(hist)
        self.last_iterations = iters
        w = (h.mH @ t).to(torch.complex64)
        return (w, self.last_history) if return_history else w


# --------------------------------------------------------------------------------------------
# DPC sum capacity (Jindal, Rhee, Vishwanath, Jafar, Goldsmith 2005)
# --------------------------------------------------------------------------------------------

def waterfill(gain: torch.Tensor, p_tot: torch.Tensor) -> torch.Tensor:
    r"""Water-filling ``p_k = [nu - 1/gain_k]^+`` with ``sum_k p_k = p_tot``, vectorised.

    Input
    -----
    gain : [b, K], float
        Channel gains (>= 0).
    p_tot : [b], float
        Total power.

    Output
    ------
    p : [b, K], same dtype as ``gain``
        Powers, ``sum = p_tot``.
    """
    k = gain.shape[-1]
    inv = 1.0 / gain.clamp_min(1e-300)
    s, _ = torch.sort(inv, dim=-1)
    n = torch.arange(1, k + 1, dtype=gain.dtype, device=gain.device)
    level = (p_tot[:, None] + torch.cumsum(s, -1)) / n           # water level with n users active
    valid = level > s
    n_act = valid.to(torch.int64).sum(-1, keepdim=True).clamp_min(1)
    nu = torch.gather(level, -1, n_act - 1)
    return (nu - inv).clamp_min(0.0)


@register_block("dpc_bound", "reference", serves="precoder")
class DPCBound(nn.Module):
    r"""MISO broadcast sum capacity (dirty-paper coding) — an upper bound, not a precoder.

    By BC-MAC duality the sum capacity with total power ``P`` equals the dual-MAC sum capacity

    .. math:: C = \max_{p \ge 0,\ \sum_k p_k \le P} \log_2\det\Big(I_M + \frac{1}{\sigma^2}
              \sum_k p_k h_k^H h_k\Big),

    computed by the modified sum-power iterative water-filling of Jindal et al. 2005 (effective
    gains :math:`\gamma_k = h_k (\sigma^2 I + \sum_{j\ne k} p_j h_j^H h_j)^{-1} h_k^H`, joint
    water-filling to ``P``, then averaging with the previous powers with weight ``1/K``, which
    converges). All in user space with ``K x K`` matrices. A sample stops when the Frank-Wolfe
    duality gap :math:`P \max_k \partial_k f - \sum_k p_k \partial_k f` (an upper bound on the
    distance to the capacity) is below ``tol`` bit/s/Hz, or after ``max_iter`` iterations.

    A reference block (kind ``reference``, serving ``precoder``): it is called with the true
    channel and returns the capacity itself, ``dpc(h, p_tx, noise_var) -> c [b]``, because no
    linear precoder attains it.

    Parameters
    ----------
    tol : float
        Duality-gap tolerance in bit/s/Hz (default 1e-9).
    max_iter : int
        Maximum iterations (default 5000).
    """

    def __init__(self, tol: float = 1e-9, max_iter: int = 5000):
        super().__init__()
        self.tol, self.max_iter = tol, int(max_iter)
        self.last_powers: torch.Tensor | None = None
        self.last_gap: torch.Tensor | None = None

    def forward(self, h, p_tx, noise_var, return_powers: bool = False):
        return self.sum_rate(h, p_tx, noise_var, return_powers)

    @torch.no_grad()
    def sum_rate(self, h, p_tx, noise_var, return_powers: bool = False):
        r"""DPC sum capacity per sample.

        Input
        -----
        h : [b, K, M], complex
            Downlink channel.
        p_tx : float or [b] tensor
            Total power budget.
        noise_var : float or [b] tensor
            Noise variance (> 0).
        return_powers : bool
            Also return the optimal dual-MAC powers.

        Output
        ------
        c : [b], torch.float64
            Sum capacity in bit/s/Hz.
        p : [b, K], torch.float64
            Dual uplink powers (``sum = p_tx``); only with ``return_powers=True``. Also kept in
            ``self.last_powers``; ``self.last_gap`` ``[b]`` holds the final duality gap (bit/s/Hz).
        """
        h = _c128(h)
        b, k, _ = h.shape
        ptx = _per_sample(p_tx, b, h.device)
        s2 = _per_sample(noise_var, b, h.device)
        r = _gram(h) / s2[:, None, None]                              # G / sigma^2
        eye = _eye(k, r)
        p = (ptx / k)[:, None].expand(b, k).clone()
        active = torch.ones(b, dtype=torch.bool, device=h.device)
        gap = torch.full_like(ptx, float("inf"))

        def grad(p):
            # d_k = g_k (I + sum_j p_j g_j^H g_j)^{-1} g_k^H = [(I + R diag p)^{-1} R]_kk
            m = torch.linalg.solve(eye + r * p[:, None, :].to(r.dtype), r)
            return torch.diagonal(m, dim1=-2, dim2=-1).real.clamp_min(0.0)

        for _ in range(self.max_iter):
            d = grad(p)
            gap = torch.where(active, (ptx * d.max(-1).values - (p * d).sum(-1)) / _LN2, gap)
            active = active & (gap > self.tol)
            if not bool(active.any()):
                break
            gam = d / (1.0 - p * d).clamp_min(1e-300)                  # gain excluding user k
            p_new = p + (waterfill(gam, ptx) - p) / k
            p = torch.where(active[:, None], p_new, p)
        sp = torch.sqrt(p).to(r.dtype)
        a = eye + sp[:, :, None] * r * sp[:, None, :]
        a = 0.5 * (a + a.mH)
        chol = torch.linalg.cholesky(a)
        c = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1).real).sum(-1) / _LN2
        self.last_powers, self.last_gap = p, gap
        return (c, p) if return_powers else c
