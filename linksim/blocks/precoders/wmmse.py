"""WMMSE sum-rate maximisation (Shi, Razaviyayn, Luo & He 2011), registered as ``wmmse``.

Iterative, run under ``torch.no_grad()``, vectorised over the batch with per-sample stopping. It
works on the Gram matrix ``G = h h^H`` only (every iterate is ``W = h^H T``), so the cost per
iteration does not grow with the number of antennas M.
"""
from __future__ import annotations

import torch

from ...errors import LinksimError
from ...registry import register_block
from ..base import Block, positive
from .rates import _LN2, _c128, _eye, _gram, _power_k, per_sample

__all__ = ["WMMSE"]


@register_block("wmmse", "precoder")
class WMMSE(Block):
    r"""WMMSE sum-rate maximisation (Shi et al. 2011) for the MISO downlink, total power budget.

    Alternates the MMSE receiver, the MSE weight and the transmit update

    .. math::
        u_k = \frac{h_k w_k}{\sum_j |h_k w_j|^2 + \sigma^2},\qquad
        \omega_k = \frac{1}{1 - \overline{u_k} h_k w_k},\qquad
        w_k = \Big(\sum_j \omega_j |u_j|^2 h_j^H h_j + \mu I_M\Big)^{-1} h_k^H u_k \omega_k

    where :math:`h_k` (``1 x M``) is user k's channel, :math:`w_k` its beam, :math:`\sigma^2`
    the noise variance and :math:`\mu \ge 0` the multiplier found by bisection so that
    :math:`\sum_k \|w_k\|^2 \le P` (``p_tx``); :math:`\mu = 0` when the unconstrained minimiser
    already fits. The update is evaluated in user space (``W = h^H T``) through an
    eigendecomposition of a ``K x K`` matrix, so each bisection step costs O(K). After each
    update the iterate is scaled to exactly :math:`P` (a common scale-up never lowers any SINR,
    so the sum-rate still never decreases). Computed in complex128.

    Initialisation: RZF (``init="rzf"``) or MRT (``init="mrt"``), scaled to :math:`P`.
    Stopping, per sample: relative change of the sum-rate below ``tol``, or ``max_iter``
    updates. Samples that have stopped are frozen while the others continue, so each sample's
    result is the one it would get alone.

    After each call, ``last_history`` ``[n+1, b]`` float64 holds the sum-rate (bit/s/Hz) of the
    initial point and of every iterate (frozen samples repeat their value) and
    ``last_iterations`` ``[b]`` int64 the number of updates each sample used.

    :param tol: relative sum-rate change that stops a sample (default 1e-3)
    :param max_iter: maximum number of WMMSE updates (default 100)
    :param init: ``"rzf"`` (default) or ``"mrt"``
    :param bisect_steps: bisection steps for :math:`\mu` (default 50 float64 halvings of a
        bracket of width at most the largest eigenvalue of the user-space matrix)
    :param precision: ``"single"`` (complex64 output) or ``"double"`` (complex128); ``None``:
        ``linksim.config.precision``
    :param device: device of the computation and the output; ``None``: ``linksim.config.device``

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input p_tx: float or [b] tensor. Total power budget :math:`P`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` (> 0).
    :input return_history: bool. Also return ``last_history`` (default `False`).

    :output w: [b, M, K], ``cdtype``. Precoder with :math:`\sum |w|^2 = P` per sample.
    :output history: [n+1, b], torch.float64. Sum-rate per iterate; only with
        ``return_history=True``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import WMMSE, sum_rate
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        wmmse = WMMSE(tol=1e-4)
        w, hist = wmmse(h, 1.0, 0.1, return_history=True)  # [8, 16, 4] complex64, [n+1, 8]
        r = sum_rate(h, w, 0.1)                            # about hist[-1]
        n = wmmse.last_iterations                          # [8], int64
    """

    def __init__(self, tol: float = 1e-3, max_iter: int = 100, init: str = "rzf",
                 bisect_steps: int = 50, precision: str | None = None, device=None):
        super().__init__(precision=precision, device=device)
        if init not in ("rzf", "mrt"):
            raise LinksimError(f"wmmse: init must be 'rzf' or 'mrt', got {init!r}")
        if not tol >= 0 or int(max_iter) != max_iter or max_iter < 0:
            raise LinksimError(f"wmmse: need tol >= 0 and an integer max_iter >= 0, got tol={tol!r}, "
                               f"max_iter={max_iter!r}")
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

    def _initial(self, g, s2, ptx):
        """The deterministic starting point ``T [b,K,K]`` (RZF or MRT), scaled to power ``ptx``."""
        b, k, _ = g.shape
        eye = _eye(k, g)
        if self.init == "rzf":
            t = torch.linalg.solve(g + (k * s2 / ptx)[:, None, None] * eye, eye.expand(b, k, k))
        else:
            t = eye.expand(b, k, k).clone()
        return t * torch.sqrt(ptx / _power_k(g, t).clamp_min(1e-300))[:, None, None]

    def _iterate(self, g, t, s2, ptx):
        """WMMSE updates from ``T`` with per-sample stopping, on complex128 Gram matrices ``g``.

        Returns the final ``T [b,K,K]``, its sum-rate ``[b]``, the history ``[n+1, b]`` and the
        updates used ``[b]``. Each sample runs as it would alone: an update is computed for the
        samples still running only (a stopped one is frozen and costs nothing more), so several
        starting points can be stacked into the batch.
        """
        b = g.shape[0]
        u, om, rate = self._stats(g, t, s2)
        t = t.clone()
        hist = [rate]
        iters = torch.zeros(b, dtype=torch.int64, device=g.device)
        run = torch.arange(b, device=g.device)                    # rows still running
        for _ in range(self.max_iter):
            ga = g[run]
            t_new = self._update(ga, u[run], om[run], ptx[run])
            u_new, om_new, rate_new = self._stats(ga, t_new, s2[run])
            rel = (rate_new - rate[run]).abs() / rate[run].abs().clamp_min(1e-12)
            t[run], u[run], om[run] = t_new, u_new, om_new
            rate = rate.clone()
            rate[run] = rate_new
            iters[run] += 1
            hist.append(rate)
            run = run[~(rel < self.tol)]
            if run.numel() == 0:
                break
        return t, rate, torch.stack(hist), iters

    @torch.no_grad()
    def forward(self, h, p_tx, noise_var, return_history: bool = False):
        h, p_tx, noise_var = _c128(self.cast(h)), self.cast(p_tx), self.cast(noise_var)
        b = h.shape[0]
        ptx = positive(per_sample(p_tx, b, h.device), "wmmse: p_tx")
        s2 = positive(per_sample(noise_var, b, h.device), "wmmse: noise_var")
        g = _gram(h)
        t, _, self.last_history, self.last_iterations = self._iterate(g, self._initial(g, s2, ptx), s2, ptx)
        w = (h.mH @ t).to(self.cdtype)
        return (w, self.last_history) if return_history else w
