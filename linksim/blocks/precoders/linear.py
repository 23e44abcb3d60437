"""Closed-form linear precoders: zero-forcing (``zf``), regularised ZF (``rzf``) and MRT (``mrt``).

Each is a :class:`~linksim.blocks.base.Block` called as ``precoder(h, p_tx, noise_var) -> w``,
scaled per sample to the total power budget. They compute in complex128, return the block's
``cdtype`` and are differentiable.
"""
from __future__ import annotations

import torch

from ...errors import LinksimError
from ...registry import register_block
from ..base import Block
from .rates import _c128, _eye, _gram, _scale_to_power, per_sample

__all__ = ["ZF", "RZF", "MRT"]


@register_block("zf", "precoder")
class ZF(Block):
    r"""Zero-forcing precoder with total-power normalisation.

    .. math::
        W = \sqrt{\frac{P}{\mathrm{tr}\big((h h^H)^{-1}\big)}}\; h^H (h h^H)^{-1}

    where ``h`` (``K x M``) is the downlink channel and :math:`P` the budget ``p_tx``. One common
    factor scales all columns so that :math:`\sum |W|^2 = P`: every user gets the same effective
    gain :math:`|h_k w_k|^2 = P / \mathrm{tr}((h h^H)^{-1})` and no interference. Requires
    ``K <= M`` (more users are refused with a ``LinksimError``: no precoder nulls the
    interference of K > M users) and a full-rank channel. Computed in complex128.

    :param precision: ``"single"`` (complex64 output) or ``"double"`` (complex128); ``None``:
        ``linksim.config.precision``
    :param device: device of the computation and the output; ``None``: ``linksim.config.device``

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input p_tx: float or [b] tensor. Total power budget :math:`P`.
    :input noise_var: float or [b] tensor, optional. Noise variance (unused).

    :output w: [b, M, K], ``cdtype``. Precoder with :math:`\sum |w|^2 = P` per sample.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import ZF, sum_rate
        h = torch.randn(8, 4, 16, dtype=torch.complex64)   # [b, K, M]
        zf = ZF()
        w = zf(h, 1.0, 0.1)                                # [8, 16, 4], complex64
        r = sum_rate(h, w, 0.1)                            # [8], float64
    """

    serves_overloaded = False
    overloaded_why = "zero-forcing inverts H H^H, which is singular for K > M (use rzf, wmmse or mrt)"

    def forward(self, h, p_tx, noise_var=None):
        h, p_tx = _c128(self.cast(h)), self.cast(p_tx)
        b, k, m = h.shape
        if k > m:
            raise LinksimError(f"zf: zero-forcing needs K <= M, got K={k} users and M={m} antennas "
                               "(use rzf, wmmse or mrt)")
        g = _gram(h)
        w = h.mH @ torch.linalg.solve(g, _eye(k, g).expand(b, k, k))
        return _scale_to_power(w, per_sample(p_tx, b, h.device)).to(self.cdtype)


@register_block("rzf", "precoder")
class RZF(Block):
    r"""Regularised zero-forcing (MMSE) precoder, scaled to the total power budget.

    .. math::
        W = c\, h^H \Big(h h^H + \frac{K \sigma^2}{P} I_K\Big)^{-1}

    where ``h`` (``K x M``) is the downlink channel, :math:`\sigma^2` the noise variance,
    :math:`P` the budget ``p_tx`` and :math:`c > 0` the common factor that makes
    :math:`\sum |W|^2 = P`. Computed in complex128.

    :param precision: ``"single"`` (complex64 output) or ``"double"`` (complex128); ``None``:
        ``linksim.config.precision``
    :param device: device of the computation and the output; ``None``: ``linksim.config.device``

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input p_tx: float or [b] tensor. Total power budget :math:`P`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2`.

    :output w: [b, M, K], ``cdtype``. Precoder with :math:`\sum |w|^2 = P` per sample.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import RZF
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        w = RZF()(h, torch.full((8,), 2.0), 0.1)           # [8, 16, 4], complex64
        w64 = RZF(precision="double")(h, 2.0, 0.1)         # [8, 16, 4], complex128
    """

    def forward(self, h, p_tx, noise_var):
        h, p_tx, noise_var = _c128(self.cast(h)), self.cast(p_tx), self.cast(noise_var)
        b, k, _ = h.shape
        ptx = per_sample(p_tx, b, h.device)
        alpha = k * per_sample(noise_var, b, h.device) / ptx
        g = _gram(h)
        a = g + alpha[:, None, None] * _eye(k, g)
        w = h.mH @ torch.linalg.solve(a, _eye(k, g).expand(b, k, k))
        return _scale_to_power(w, ptx).to(self.cdtype)


@register_block("mrt", "precoder")
class MRT(Block):
    r"""Maximum-ratio transmission (matched filter), scaled to the total power budget.

    .. math::
        W = \sqrt{\frac{P}{\|h\|_F^2}}\; h^H

    where ``h`` (``K x M``) is the downlink channel and :math:`P` the budget ``p_tx``, so that
    :math:`\sum |W|^2 = P`. Computed in complex128.

    :param precision: ``"single"`` (complex64 output) or ``"double"`` (complex128); ``None``:
        ``linksim.config.precision``
    :param device: device of the computation and the output; ``None``: ``linksim.config.device``

    :input h: [b, K, M], complex. Downlink channel (row k = user k).
    :input p_tx: float or [b] tensor. Total power budget :math:`P`.
    :input noise_var: float or [b] tensor, optional. Noise variance (unused).

    :output w: [b, M, K], ``cdtype``. Precoder with :math:`\sum |w|^2 = P` per sample.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.precoders import MRT
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        w = MRT()(h, 1.0)                                  # [8, 16, 4], complex64
    """

    def forward(self, h, p_tx, noise_var=None):
        h, p_tx = _c128(self.cast(h)), self.cast(p_tx)
        return _scale_to_power(h.mH, per_sample(p_tx, h.shape[0], h.device)).to(self.cdtype)
