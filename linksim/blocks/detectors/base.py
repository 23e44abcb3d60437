"""What the detectors share: input checks, the per-sample noise variance, the noise covariance
and the constructor (:class:`_Detector`). Registers the ``detector`` block kind."""
from __future__ import annotations

import torch

from ...errors import LinksimError
from ...registry import register_kind
from ..base import Block, per_sample

_MIN_NOISE_VAR = 1e-10

register_kind("detector", "(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T], y = h x + n")


def _check_inputs(name: str, y: torch.Tensor, h: torch.Tensor) -> None:
    if y.dim() != 3 or h.dim() != 3 or y.shape[0] != h.shape[0] or y.shape[1] != h.shape[1]:
        raise LinksimError(f"{name}: expected y [b,M,T] and h [b,M,K] with equal b and M, "
                           f"got y {tuple(y.shape)} and h {tuple(h.shape)}")


def noise_vector(noise_var, b: int, device, dtype=torch.float32) -> torch.Tensor:
    r"""The noise variance of every sample as a real vector, clamped away from 0.

    .. math::
        \sigma^2_i \leftarrow \max(\sigma^2_i, 10^{-10}), \quad i = 1, \dots, b

    A Python number goes straight to ``dtype`` (no float32 rounding); complex values give their real part.

    :input noise_var: float, 0-d tensor or [b] tensor. :math:`\sigma^2` for the batch or per sample.
    :input b: int. Batch size.
    :input device: str or torch.device. Where the result lives.
    :input dtype: torch.dtype (default ``torch.float32``). Real dtype of the result.

    :output nv: [b], ``dtype``. Per-sample noise variance (``LinksimError`` for any other size).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.detectors import noise_vector
        noise_vector(0.1, 4, "cpu")                                  # [4] float32
        noise_vector(torch.rand(4), 4, "cpu", torch.float64)         # [4] float64
    """
    try:
        nv = per_sample(noise_var, b, device, dtype)
    except LinksimError:
        raise LinksimError(f"noise_var must be a float or have shape [{b}], got "
                           f"{tuple(torch.as_tensor(noise_var).shape)}") from None
    return nv.clamp_min(_MIN_NOISE_VAR)


def _noise_cov(nv: torch.Tensor, m: int, cdtype: torch.dtype) -> torch.Tensor:
    """``nv [b]`` -> ``S = nv I_M`` ``[b, 1, M, M]`` in ``cdtype`` (broadcasts over the T slots), or
    one shared ``[M, M]`` when every sample has the same noise variance (Sionna then whitens once)."""
    eye = torch.eye(m, dtype=cdtype, device=nv.device)
    if bool((nv == nv[0]).all()):
        return nv[0].to(cdtype) * eye
    return nv.to(cdtype)[:, None, None, None] * eye



class _Detector(Block):
    """Shared constructor and input casting of the detectors."""

    name = "detector"

    def __init__(self, num_bits_per_symbol: int = 4, precision: str | None = None,
                 device: str | torch.device | None = None):
        super().__init__(precision=precision, device=device)
        self.num_bits_per_symbol = int(num_bits_per_symbol)

    def _inputs(self, y, h, noise_var):
        """``y``, ``h`` complex in ``cdtype`` on the device, checked; ``noise_var`` as ``[b]``."""
        y, h = self.cast(y), self.cast(h)
        _check_inputs(self.name, y, h)
        y, h = y.to(self.cdtype), h.to(self.cdtype)          # real inputs (no-op for complex)
        return y, h, noise_vector(self.cast(noise_var), y.shape[0], self.device, self.dtype)

