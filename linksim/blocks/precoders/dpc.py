"""The MISO broadcast sum capacity (dirty-paper coding), registered as ``dpc_bound``, and water-filling.

``dpc_bound`` is a reference block serving ``precoder``: it is given the true channel and returns
the capacity itself (``[b]`` float64, bit/s/Hz), the upper bound of every precoder's sum-rate.
Computed in complex128 / float64 in user space (``K x K`` matrices), under ``torch.no_grad()``.
"""
from __future__ import annotations

import torch

from ...registry import register_block
from ..base import Block, positive
from .rates import _LN2, _c128, _eye, _gram, per_sample

__all__ = ["waterfill", "DPCBound"]


def waterfill(gain: torch.Tensor, p_tot: torch.Tensor) -> torch.Tensor:
    r"""Water-filling over K parallel channels, vectorised over the batch.

    .. math::
        p_k = \Big[\nu - \frac{1}{g_k}\Big]^+,\qquad \sum_k p_k = P

    where :math:`g_k \ge 0` are the channel gains, :math:`P` the total power and the water level
    :math:`\nu` is found exactly (sorted inverse gains, cumulative sums).

    :input gain: [b, K], float. Channel gains :math:`g_k \ge 0`.
    :input p_tot: [b], float. Total power :math:`P`.

    :output p: [b, K], dtype of ``gain``. Powers, :math:`\sum_k p_k = P`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import waterfill
        p = waterfill(torch.tensor([[4.0, 1.0, 0.1]]), torch.tensor([1.0]))  # [[0.875, 0.125, 0.]]
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
class DPCBound(Block):
    r"""MISO broadcast sum capacity (dirty-paper coding): an upper bound, not a precoder.

    By BC-MAC duality the sum capacity with total power :math:`P` equals the dual-MAC sum
    capacity

    .. math::
        C = \max_{p \ge 0,\ \sum_k p_k \le P}
            \log_2\det\Big(I_M + \frac{1}{\sigma^2} \sum_{k=1}^{K} p_k h_k^H h_k\Big)

    where :math:`h_k` (``1 x M``) is user k's channel, :math:`\sigma^2` the noise variance and
    :math:`p_k` the dual uplink powers. It is computed by the modified sum-power iterative
    water-filling of Jindal, Rhee, Vishwanath, Jafar & Goldsmith 2005: effective gains
    :math:`\gamma_k = h_k (\sigma^2 I + \sum_{j\ne k} p_j h_j^H h_j)^{-1} h_k^H`, joint
    water-filling to :math:`P`, then averaging with the previous powers with weight
    :math:`1/K` (which converges), all in user space with ``K x K`` matrices. A sample stops
    when the Frank-Wolfe duality gap :math:`P \max_k \partial_k f - \sum_k p_k \partial_k f`
    (an upper bound on the distance to the capacity) is below ``tol`` bit/s/Hz, or after
    ``max_iter`` iterations.

    A reference block (kind ``reference``, serving ``precoder``): it is called with the true
    channel and returns the capacity itself, because no linear precoder attains it. After each
    call ``last_powers`` ``[b, K]`` float64 holds the dual uplink powers and ``last_gap``
    ``[b]`` float64 the final duality gap (bit/s/Hz).

    :param tol: duality-gap tolerance in bit/s/Hz (default 1e-9)
    :param max_iter: maximum number of iterations (default 5000)
    :param precision: ``"single"`` or ``"double"``; ``None``: ``linksim.config.precision``.
        The capacity is float64 in both (the computation is complex128 anyway)
    :param device: device of the computation and the output; ``None``: ``linksim.config.device``

    :input h: [b, K, M], complex. True downlink channel (row k = user k).
    :input p_tx: float or [b] tensor. Total power budget :math:`P`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` (> 0).
    :input return_powers: bool. Also return the dual uplink powers (default `False`).

    :output c: [b], torch.float64. Sum capacity :math:`C` in bit/s/Hz.
    :output p: [b, K], torch.float64. Dual uplink powers (:math:`\sum_k p_k = P`); only with
        ``return_powers=True``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import DPCBound, ZF, sum_rate
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        dpc = DPCBound()
        c, p = dpc(h, 1.0, 0.1, return_powers=True)         # [8], [8, 4], float64
        assert (sum_rate(h, ZF()(h, 1.0), 0.1) <= c + 1e-6).all()
    """

    def __init__(self, tol: float = 1e-9, max_iter: int = 5000, precision: str | None = None,
                 device=None):
        super().__init__(precision=precision, device=device)
        self.tol, self.max_iter = tol, int(max_iter)
        self.last_powers: torch.Tensor | None = None
        self.last_gap: torch.Tensor | None = None

    def forward(self, h, p_tx, noise_var, return_powers: bool = False):
        return self.sum_rate(h, p_tx, noise_var, return_powers)

    @torch.no_grad()
    def sum_rate(self, h, p_tx, noise_var, return_powers: bool = False):
        r"""The sum capacity per sample: the same as calling the block (see the class).

        :input h: [b, K, M], complex. True downlink channel.
        :input p_tx: float or [b] tensor. Total power budget.
        :input noise_var: float or [b] tensor. Noise variance (> 0).
        :input return_powers: bool. Also return the dual uplink powers.

        :output c: [b], torch.float64. Sum capacity in bit/s/Hz.
        :output p: [b, K], torch.float64. Dual uplink powers; only with ``return_powers=True``.
        """
        h, p_tx, noise_var = _c128(self.cast(h)), self.cast(p_tx), self.cast(noise_var)
        b, k, _ = h.shape
        ptx = positive(per_sample(p_tx, b, h.device), "dpc_bound: p_tx")
        s2 = positive(per_sample(noise_var, b, h.device), "dpc_bound: noise_var")
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
