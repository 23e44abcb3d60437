"""Sionna's linear equalisers as detector blocks: ``lmmse``, ``zf_det``, ``mf`` (unbiased soft
estimates)."""
from __future__ import annotations

import torch

from ...errors import LinksimError
from ...registry import register_block
from .base import _Detector, _noise_cov


class _LinearDetector(_Detector):
    """Shared code of the Sionna linear equalisers."""

    def _equalise(self, y, h, s):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var) -> torch.Tensor:
        y, h, nv = self._inputs(y, h, noise_var)
        yt = y.transpose(1, 2)                                             # [b, T, M]
        hb = h.unsqueeze(1)                                                # [b, 1, M, K] (over T)
        x_hat, _ = self._equalise(yt, hb, _noise_cov(nv, y.shape[1], self.cdtype))   # [b, T, K]
        return x_hat.transpose(1, 2).to(self.cdtype).contiguous()


@register_block("lmmse", "detector")
class LMMSEDetector(_LinearDetector):
    r"""LMMSE equaliser (Sionna ``lmmse_equalizer``, interference whitened first).

    .. math::
        \hat{\mathbf{x}} = \operatorname{diag}\left(\mathbf{G}\mathbf{H}\right)^{-1}\mathbf{G}\mathbf{y},
        \qquad \mathbf{G} = \mathbf{H}^{\mathsf{H}}\left(\mathbf{H}\mathbf{H}^{\mathsf{H}} + \sigma^2\mathbf{I}_M\right)^{-1}

    per slot, so that :math:`\hat{x}_k = x_k + e_k` with residual variance
    :math:`\operatorname{diag}(\mathbf{G}\mathbf{H})^{-1} - 1`.

    :param num_bits_per_symbol: accepted for the common detector signature (unused)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input y: [b, M, T], complex. Received signals of ``T`` slots sharing the channel.
    :input h: [b, M, K], complex. Channel matrices :math:`\mathbf{H}`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` per antenna.

    :output x_hat: [b, K, T], ``cdtype``. Unbiased soft estimates :math:`\hat{x}_k = x_k + e_k`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.detectors import LMMSEDetector, random_symbols
        h = torch.randn(8, 16, 4, dtype=torch.complex64)   # [b, M, K]
        y = h @ random_symbols((8, 4, 10), 4)[1] + 0.1 * torch.randn(8, 16, 10, dtype=h.dtype)
        x_hat = LMMSEDetector()(y, h, 0.01)   # [8, 4, 10] complex64
    """

    name = "lmmse"

    def _equalise(self, y, h, s):
        from sionna.phy.mimo import lmmse_equalizer
        return lmmse_equalizer(y, h, s, whiten_interference=True, precision=self.precision)


@register_block("zf_det", "detector")
class ZFDetector(_LinearDetector):
    r"""Zero-forcing equaliser (Sionna ``zf_equalizer``).

    .. math::
        \hat{\mathbf{x}} = \left(\mathbf{H}^{\mathsf{H}}\mathbf{H}\right)^{-1}\mathbf{H}^{\mathsf{H}}\mathbf{y}

    per slot: interference-free, :math:`\hat{x}_k = x_k + e_k` with
    :math:`\mathbb{E}[\mathbf{e}\mathbf{e}^{\mathsf{H}}] = \sigma^2(\mathbf{H}^{\mathsf{H}}\mathbf{H})^{-1}`.

    :param num_bits_per_symbol: accepted for the common detector signature (unused)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input y: [b, M, T], complex. Received signals of ``T`` slots sharing the channel.
    :input h: [b, M, K], complex. Channel matrices :math:`\mathbf{H}`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` per antenna.

    :output x_hat: [b, K, T], ``cdtype``. Unbiased soft estimates :math:`\hat{x}_k = x_k + e_k`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.detectors import ZFDetector, random_symbols
        h = torch.randn(8, 16, 4, dtype=torch.complex64)   # [b, M, K]
        y = h @ random_symbols((8, 4, 10), 4)[1] + 0.1 * torch.randn(8, 16, 10, dtype=h.dtype)
        x_hat = ZFDetector()(y, h, 0.01)   # [8, 4, 10] complex64
    """

    name = "zf_det"
    serves_overloaded = False
    overloaded_why = "zero-forcing inverts H^H H, which is singular for K > M (use lmmse, ml or mf)"

    def _equalise(self, y, h, s):
        if h.shape[-1] > h.shape[-2]:
            raise LinksimError(f"zf_det: zero-forcing needs K <= M, got K={h.shape[-1]} users and "
                               f"M={h.shape[-2]} antennas (use lmmse, ml or mf)")
        from sionna.phy.mimo import zf_equalizer
        return zf_equalizer(y, h, s, precision=self.precision)


@register_block("mf", "detector")
class MFDetector(_LinearDetector):
    r"""Matched filter (Sionna ``mf_equalizer``), scaled to be unbiased.

    .. math::
        \hat{\mathbf{x}} = \operatorname{diag}\left(\mathbf{H}^{\mathsf{H}}\mathbf{H}\right)^{-1}\mathbf{H}^{\mathsf{H}}\mathbf{y}

    per slot (:math:`\hat{x}_k = x_k + e_k`, :math:`e_k` including the inter-user interference).

    :param num_bits_per_symbol: accepted for the common detector signature (unused)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input y: [b, M, T], complex. Received signals of ``T`` slots sharing the channel.
    :input h: [b, M, K], complex. Channel matrices :math:`\mathbf{H}`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` per antenna.

    :output x_hat: [b, K, T], ``cdtype``. Unbiased soft estimates :math:`\hat{x}_k = x_k + e_k`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.detectors import MFDetector, random_symbols
        h = torch.randn(8, 16, 4, dtype=torch.complex64)   # [b, M, K]
        y = h @ random_symbols((8, 4, 10), 4)[1] + 0.1 * torch.randn(8, 16, 10, dtype=h.dtype)
        x_hat = MFDetector()(y, h, 0.01)   # [8, 4, 10] complex64
    """

    name = "mf"

    def _equalise(self, y, h, s):
        from sionna.phy.mimo import mf_equalizer
        return mf_equalizer(y, h, s, precision=self.precision)
