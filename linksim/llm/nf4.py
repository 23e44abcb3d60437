r"""4-bit NormalFloat (NF4) storage on CPU (Dettmers et al., QLoRA, arXiv 2305.14314): blocks of 64
values, absmax scaling, nearest of 16 normal-quantile levels; 4.5 bits per weight with the float32
absmax. :class:`NF4Linear` is a frozen linear layer stored that way (used by :mod:`.quant`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LinksimError

__all__ = ["NF4_CODE", "BLOCK", "nf4_quantize", "nf4_dequantize", "pack", "unpack", "NF4Linear"]

BLOCK = 64  # values per absmax block (QLoRA's block size for weights)

NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=torch.float32)
r"""The 16 NF4 levels (QLoRA, appendix E), ascending; code ``i`` means ``NF4_CODE[i]``, code 7 is 0.
Normal quantiles: :math:`\Phi^{-1}(p)` at 9 (positive) resp. :math:`-\Phi^{-1}(p)` at 8 (negative)
points :math:`p` evenly spaced in :math:`[\delta, \tfrac12]`, the :math:`\tfrac12` end dropped, plus 0,
divided by the largest (:math:`\delta = 0.9677083`)."""


def _nearest(x: torch.Tensor) -> torch.Tensor:
    """Index of the nearest NF4 level for normalised ``x`` (float32); ties go to the lower index."""
    code = NF4_CODE.to(x.device)
    mids = (code[1:] + code[:-1]) * 0.5
    i = torch.bucketize(x, mids)                      # mids[i-1] < x <= mids[i]
    # float32 mid-points can disagree with |x - c| by an ulp: decide among neighbours by distance
    cand = torch.stack([(i - 1).clamp_min(0), i, (i + 1).clamp_max(15)], -1)
    d = (x.unsqueeze(-1) - code[cand]).abs()
    return cand.gather(-1, d.argmin(-1, keepdim=True)).squeeze(-1)


def nf4_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""NF4 quantisation with per-block absmax scaling (QLoRA).

    The weight is flattened row-major and cut into blocks :math:`b` of :data:`BLOCK` = 64 values
    (the last block zero-padded). For value :math:`w_j` of block :math:`b`

    .. math::

        s_b = \max_{k \in b} |w_k|, \qquad
        c_j = \operatorname*{arg\,min}_{i \in \{0..15\}} \left| \frac{w_j}{s_b} - q_i \right|

    with :math:`q_i` = :data:`NF4_CODE` (division and distances in float32; a tie goes to the lower
    index; an all-zero block has :math:`s_b = 0` and all codes 7, i.e. 0).

    :input w: [...], `torch.float`. Any shape and floating dtype (computed in float32).

    :output codes: [n], `torch.uint8`. One code in 0..15 per value, ``n = w.numel()``.
    :output absmax: [ceil(n / 64)], `torch.float32`. :math:`s_b` per block.

    .. rubric:: Examples

    .. code-block:: python

        codes, absmax = nf4_quantize(torch.randn(128, 64))   # [8192] uint8, [128] float32
    """
    flat = w.detach().reshape(-1).to(torch.float32)
    n, nb = flat.numel(), max(1, math.ceil(flat.numel() / BLOCK))
    blocks = F.pad(flat, (0, nb * BLOCK - n)).view(nb, BLOCK)
    absmax = blocks.abs().amax(1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    codes = _nearest(blocks / scale[:, None]).reshape(-1)[:n]
    return codes.to(torch.uint8), absmax


def nf4_dequantize(codes: torch.Tensor, absmax: torch.Tensor, shape,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Inverse of :func:`nf4_quantize`: :math:`\hat w_j = q_{c_j}\, s_b`.

    :input codes: [n], `torch.uint8`. Codes 0..15 (unpacked).
    :input absmax: [ceil(n / 64)], `torch.float32`. Block scales.
    :param shape: shape of the weight (``prod(shape) == n``)
    :param dtype: output dtype (the product is formed in float32, then cast)

    :output w_hat: [shape], `dtype`. The dequantised weight.

    .. rubric:: Examples

    .. code-block:: python

        w = torch.randn(4, 64)
        w_hat = nf4_dequantize(*nf4_quantize(w), w.shape)    # |w - w_hat| <= 0.152 * row absmax
    """
    n, nb = codes.numel(), absmax.numel()
    vals = NF4_CODE.to(absmax.device)[codes.long()]
    vals = F.pad(vals, (0, nb * BLOCK - n)).view(nb, BLOCK) * absmax.to(torch.float32)[:, None]
    return vals.reshape(-1)[:n].reshape(shape).to(dtype)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte: byte ``k`` = ``codes[2k] << 4 | codes[2k+1]`` (odd n: last low nibble 0).

    :input codes: [n], `torch.uint8`. Values 0..15.

    :output packed: [ceil(n / 2)], `torch.uint8`.

    .. rubric:: Examples

    .. code-block:: python

        pack(torch.tensor([1, 2, 15], dtype=torch.uint8)).tolist()       # [18, 240]
    """
    c = codes.reshape(-1).to(torch.uint8)
    if c.numel() % 2:
        c = torch.cat([c, c.new_zeros(1)])
    return (c[0::2] << 4) | c[1::2]


def unpack(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``packed`` [ceil(n / 2)] uint8 -> ``codes`` [n] uint8."""
    return torch.stack([packed >> 4, packed & 15], -1).reshape(-1)[:n]


class _NF4MatMul(torch.autograd.Function):
    """``x @ W^T + b`` with the NF4 weight decoded again in backward instead of kept: autograd would
    otherwise hold one fp32 copy of every quantised weight until backward, more memory than the
    fp32 model it replaces. The weight is frozen: only ``x`` gets a gradient."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        b = None if layer.bias is None else layer.bias.to(x.dtype)
        return F.linear(x, layer.dequantize(x.dtype), b)

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.layer.dequantize(grad.dtype), None


class NF4Linear(nn.Module):
    r"""Frozen linear layer :math:`\mathbf{y} = \mathbf{x}\hat{\mathbf{W}}^{\mathsf T} + \mathbf{b}`
    with :math:`\hat{\mathbf{W}}` stored as packed NF4 codes + float32 block absmax.

    Dequantised (:func:`nf4_dequantize`) at every call, in the input's dtype; nothing trainable.
    Buffers: ``qweight`` uint8 [ceil(out*in/2)], ``absmax`` float32 [ceil(out*in/64)], ``bias``
    float32 [out] or None (``model.half()`` casts the float ones too). No ``weight`` attribute on
    purpose (peft's in-place ``merge`` would silently do nothing): use :meth:`dequantize`.

    :param in_features: input size
    :param out_features: output size
    :param bias: whether the layer has a bias

    :input x: [..., in_features], `torch.float`.

    :output y: [..., out_features], same dtype as ``x``.

    .. rubric:: Examples

    .. code-block:: python

        q = NF4Linear.from_linear(torch.nn.Linear(64, 32))
        y = q(torch.randn(5, 64))            # [5, 32]; q.nbytes == 1024 + 128 + 128 (codes, absmax, bias)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        n = self.in_features * self.out_features
        self.register_buffer("qweight", torch.zeros(math.ceil(n / 2), dtype=torch.uint8))
        self.register_buffer("absmax", torch.zeros(math.ceil(n / BLOCK), dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(self.out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, codes: torch.Tensor | None = None,
                    absmax: torch.Tensor | None = None) -> "NF4Linear":
        """NF4 copy of ``linear`` (its weight quantised here, or the given ``codes``/``absmax``,
        e.g. LoftQ's :math:`\\mathbf{Q}`), on the same device."""
        if not isinstance(linear, nn.Linear):
            raise LinksimError(f"NF4Linear.from_linear: expected nn.Linear, got {type(linear).__name__}")
        if codes is None:
            codes, absmax = nf4_quantize(linear.weight)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None).to(linear.weight.device)
        q.qweight.copy_(pack(codes))
        q.absmax.copy_(absmax)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight :math:`\\hat{\\mathbf{W}}` ``[out, in]`` in ``dtype``."""
        n = self.in_features * self.out_features
        return nf4_dequantize(unpack(self.qweight, n), self.absmax,
                              (self.out_features, self.in_features), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NF4MatMul.apply(x, self)

    @property
    def nbytes(self) -> int:
        """Real storage: packed codes + absmax (+ bias), in bytes."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.absmax, self.bias)
                   if t is not None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, nf4 block={BLOCK}"
