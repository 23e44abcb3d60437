"""Shared helpers of the precoders (per-sample values, Gram matrix, power scaling) and the rates.

:func:`sinr` and :func:`sum_rate` evaluate any precoder ``w [b, M, K]`` on a channel
``h [b, K, M]`` in complex128 and return float64; they are differentiable (usable as a training
loss). The underscore helpers work on complex128 tensors and are for the precoder modules.
"""
from __future__ import annotations

import math

import torch

from ..base import per_sample  # noqa: F401  (re-exported: linksim.blocks.precoders.per_sample)

__all__ = ["per_sample", "sinr", "sum_rate"]

_LN2 = math.log(2.0)


def _c128(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128)


def _gram(h: torch.Tensor) -> torch.Tensor:
    """``G = h h^H`` ``[b, K, K]``; ``G[k, j] = h_k h_j^H``."""
    return h @ h.mH


def _eye(k: int, like: torch.Tensor) -> torch.Tensor:
    """``I_K`` in the dtype and on the device of ``like``."""
    return torch.eye(k, dtype=like.dtype, device=like.device)


def _power_k(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Total power ``||h^H T||_F^2 = tr(T^H G T)`` ``[b]`` float64."""
    return (t.conj() * (g @ t)).sum((-2, -1)).real


def _scale_to_power(w: torch.Tensor, p_tx: torch.Tensor) -> torch.Tensor:
    """Scale each sample of ``w [b, M, K]`` to total power ``p_tx [b]`` (zero stays zero)."""
    pw = (w.real ** 2 + w.imag ** 2).sum((-2, -1))
    c = torch.sqrt(p_tx / pw.clamp_min(1e-300))
    return w * c[:, None, None]


def sinr(h: torch.Tensor, w: torch.Tensor, noise_var) -> torch.Tensor:
    r"""Per-user SINR of linear precoding with single-user decoding.

    User :math:`k` receives :math:`y_k = h_k \sum_j w_j s_j + n_k`, so

    .. math::
        \mathrm{SINR}_k = \frac{|h_k w_k|^2}{\sum_{j \ne k} |h_k w_j|^2 + \sigma^2}

    where :math:`h_k` is row :math:`k` of ``h``, :math:`w_j` column :math:`j` of ``w`` and
    :math:`\sigma^2` the noise variance. Computed in complex128.

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input w: [b, M, K], complex. Precoder (column k = user k's beam).
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` of every user.

    :output sinr: [b, K], torch.float64. Linear SINR, differentiable in ``h`` and ``w``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import MRT, sinr
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        s = sinr(h, MRT()(h, 1.0, 0.1), 0.1)       # [8, 4], float64
    """
    h, w = _c128(h), _c128(w)
    b, k = h.shape[0], h.shape[1]
    s2 = per_sample(noise_var, b, h.device)
    e = h @ w                                             # [b, K, K], e[k, j] = h_k w_j
    p = e.real ** 2 + e.imag ** 2
    sig = torch.diagonal(p, dim1=-2, dim2=-1)
    off = 1.0 - torch.eye(k, dtype=p.dtype, device=p.device)
    interf = (p * off).sum(-1)
    return sig / (interf + s2[:, None])


def sum_rate(h: torch.Tensor, w: torch.Tensor, noise_var) -> torch.Tensor:
    r"""Sum-rate of linear precoding with single-user decoding (Gaussian signalling).

    .. math::
        R = \sum_{k=1}^{K} \log_2\left(1 + \mathrm{SINR}_k\right)

    with :math:`\mathrm{SINR}_k` of :func:`sinr` (user :math:`k` treats the other users'
    signals as noise). Computed in complex128.

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input w: [b, M, K], complex. Precoder (column k = user k's beam).
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` of every user.

    :output rate: [b], torch.float64. Sum-rate in bit/s/Hz per sample; differentiable in ``h``
        and ``w`` (usable as a training loss).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import ZF, sum_rate
        h = torch.randn(8, 4, 16, dtype=torch.complex64)   # [b, K, M]
        w = ZF()(h, 1.0, 0.1)                              # [8, 16, 4], complex64
        r = sum_rate(h, w, 0.1)                            # [8], float64, bit/s/Hz
    """
    return torch.log1p(sinr(h, w, noise_var)).sum(-1) / _LN2
