"""The optimal beamforming structure: the map ``(p, lambda) -> W`` and its inverse for a given W.

Every sum-rate-optimal MISO downlink beamformer has the structure of Björnson, Bengtsson &
Ottersten 2014, parametrised by ``2K`` non-negative numbers (powers ``p`` and structure
parameters ``lambda``). :func:`structured_beamformer` evaluates it (differentiably: the learned
CNN precoder trains through it), :func:`wmmse_p_lambda` extracts ``(p, lambda)`` from a precoder
such as the WMMSE solution (the training labels). Both compute in complex128 / float64 and work
in user space (``K x K`` matrices) through the push-through identity.
"""
from __future__ import annotations

import torch

from .rates import _c128, _eye, _gram, per_sample

__all__ = ["structured_beamformer", "wmmse_p_lambda"]


def structured_beamformer(h: torch.Tensor, p: torch.Tensor, lam: torch.Tensor, noise_var,
                          p_tx) -> torch.Tensor:
    r"""Beamformer with the optimal structure (Björnson, Bengtsson & Ottersten 2014).

    .. math::
        \tilde w_k = \Big(\sigma^2 I_M + \sum_{j=1}^{K} \lambda_j h_j^H h_j\Big)^{-1} h_k^H,\qquad
        w_k = \sqrt{p_k'}\, \frac{\tilde w_k}{\|\tilde w_k\|},\qquad
        p_k' = p_k \frac{P}{\sum_j p_j}

    where :math:`h_k` (``1 x M``) is user k's channel, :math:`\sigma^2` the noise variance,
    :math:`P` the power budget ``p_tx``, :math:`p_k \ge 0` the user powers (any scale: they are
    rescaled so that :math:`\sum_k \|w_k\|^2 = P`) and :math:`\lambda_k \ge 0` the structure
    parameters (used as given). At the sum-rate optimum the :math:`\lambda_k` are the dual uplink
    powers and :math:`\sum_k \lambda_k = P` (the convention of :func:`wmmse_p_lambda`);
    :math:`\lambda = 0` gives MRT directions, large equal :math:`\lambda` approaches ZF.

    Computed in complex128 in user space with the push-through identity
    :math:`(\sigma^2 I + h^H \Lambda h)^{-1} h^H = h^H (\sigma^2 I + \Lambda h h^H)^{-1}`.

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input p: [b, K], float. Power per user, :math:`p_k \ge 0` (rescaled to ``p_tx``).
    :input lam: [b, K], float. Structure parameters, :math:`\lambda_k \ge 0`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2`.
    :input p_tx: float or [b] tensor. Total power budget :math:`P`.

    :output w: [b, M, K], complex dtype of ``h`` (complex64 for complex64 ``h``, complex128 for
        complex128 ``h``). Precoder with :math:`\sum |w|^2 = P`; differentiable in ``p``,
        ``lam`` and ``h``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import structured_beamformer, sum_rate
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        p = torch.full((8, 4), 0.25)                          # equal powers
        lam = torch.full((8, 4), 0.25)                        # sum(lam) = p_tx: RZF directions
        w = structured_beamformer(h, p, lam, 0.1, 1.0)        # [8, 16, 4], complex64
        r = sum_rate(h, w, 0.1)                               # [8], float64
    """
    out_dtype = torch.promote_types(h.dtype, torch.complex64)
    h = _c128(h)
    b, k, _ = h.shape
    s2 = per_sample(noise_var, b, h.device)
    ptx = per_sample(p_tx, b, h.device)
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
    return w.to(out_dtype)


def _mmse_receiver(h: torch.Tensor, w: torch.Tensor, s2: torch.Tensor):
    """MMSE receiver ``u [b, K]`` complex and MSE weight ``1/e [b, K]`` of precoder ``w``."""
    e = h @ w
    pw = e.real ** 2 + e.imag ** 2
    k = pw.shape[-1]
    interf = (pw * (1.0 - torch.eye(k, dtype=pw.dtype, device=pw.device))).sum(-1) + s2[:, None]
    tot = pw.sum(-1) + s2[:, None]
    u = torch.diagonal(e, dim1=-2, dim2=-1) / tot
    return u, tot / interf


def wmmse_p_lambda(h: torch.Tensor, w: torch.Tensor, noise_var, p_tx):
    r"""Structure parameters ``(p, lam)`` of a given precoder (e.g. the WMMSE solution).

    The powers are :math:`p_k = \|w_k\|^2`. The :math:`\lambda_k` follow from the WMMSE
    stationarity condition: with the MMSE receiver
    :math:`u_k = h_k w_k / (\sum_j |h_k w_j|^2 + \sigma^2)` and the MSE weight
    :math:`\omega_k = 1/(1 - \overline{u_k} h_k w_k)`, a WMMSE fixed point satisfies
    :math:`w_k \propto (\mu I + \sum_j \omega_j |u_j|^2 h_j^H h_j)^{-1} h_k^H` with
    :math:`\mu P = \sigma^2 \sum_j \omega_j |u_j|^2`, hence

    .. math::
        \lambda_k = \frac{\sigma^2 \omega_k |u_k|^2}{\mu}
                  = P\, \frac{\omega_k |u_k|^2}{\sum_j \omega_j |u_j|^2}

    where :math:`h_k` is user k's channel, :math:`w_k` its beam, :math:`\sigma^2` the noise
    variance and :math:`P` the budget ``p_tx``. At an exact WMMSE fixed point with full power,
    ``structured_beamformer(h, p, lam, noise_var, p_tx)`` reproduces ``w`` up to a per-column
    phase (same SINRs); for a partly converged ``w`` it is an approximation (the WMMSE tolerance
    1e-3 gives sum-rates within a fraction of a percent). Computed in complex128.

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input w: [b, M, K], complex. Precoder (column k = user k's beam).
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2`.
    :input p_tx: float or [b] tensor. Total power budget :math:`P` (the scale of ``lam``).

    :output p: [b, K], torch.float64. Power per user, :math:`\|w_k\|^2`.
    :output lam: [b, K], torch.float64. Structure parameters, :math:`\sum_k \lambda_k = P`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import WMMSE, structured_beamformer, wmmse_p_lambda
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        w = WMMSE()(h, 1.0, 0.1)                               # [8, 16, 4], complex64
        p, lam = wmmse_p_lambda(h, w, 0.1, 1.0)                # [8, 4], [8, 4], float64
        w2 = structured_beamformer(h, p, lam, 0.1, 1.0)        # about the same sum-rate as w
    """
    h, w = _c128(h), _c128(w)
    b = h.shape[0]
    s2 = per_sample(noise_var, b, h.device)
    ptx = per_sample(p_tx, b, h.device)
    p = (w.real ** 2 + w.imag ** 2).sum(-2)
    u, om = _mmse_receiver(h, w, s2)
    d = om * (u.real ** 2 + u.imag ** 2)
    lam = d * (ptx / d.sum(-1).clamp_min(1e-300))[:, None]
    return p, lam
