r"""Classical uplink MIMO detectors (Sionna's equalisers and tree searches) as detector blocks.

Every registered detector maps ``(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T]`` for

.. math::
    \mathbf{y} = \mathbf{H}\mathbf{x} + \mathbf{n}, \qquad
    \mathbf{x}\in\mathcal{C}^K, \quad \mathbf{n}\sim\mathcal{CN}(\mathbf{0}, \sigma^2\mathbf{I}_M)

(one :math:`\mathbf{H}` for the ``T`` slots; :math:`\mathcal{C}` Sionna's unit-energy square QAM,
see :mod:`linksim.blocks.qam`, whose symbol helpers are re-exported here). ``lmmse``, ``zf_det``
and ``mf`` return unbiased soft estimates, ``kbest`` and ``ml`` hard decisions.
"""
from __future__ import annotations

import torch

from ..errors import LinksimError
from ..registry import register_block, register_kind
from .base import Block, per_sample
from .qam import (constellation_points, hard_decision, qam_name,  # noqa: F401
                  random_symbols, symbols_to_bits)

#: ``ml`` refuses problems with more hypotheses than this (2^20, about 1.0e6).
ML_MAX_HYPOTHESES = 2 ** 20
#: complex entries of the largest intermediate tensor inside Sionna's ML detector per chunk
_ML_CHUNK_ELEMENTS = 2 ** 22
_MIN_NOISE_VAR = 1e-10

register_kind("detector", "(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T], y = h x + n")


# --------------------------------------------------------------------------- helpers
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


def _square_reduction(y: torch.Tensor, h: torch.Tensor):
    """Sufficient statistic of ``y = h x + n`` for M >= K: ``y' = R x + n'`` with ``R`` K x K.

    ``H^H H = L L^H`` (Cholesky), ``R = L^H``, ``y' = L^-1 H^H y``; then
    ``||y - Hx||^2 = ||y' - Rx||^2 + const`` and ``n' ~ CN(0, noise_var I_K)``, so ML and K-Best
    decisions are unchanged while the work per hypothesis drops from M to K.
    ``y [b, M, T]``, ``h [b, M, K]`` -> ``y' [b, K, T]``, ``R [b, K, K]``."""
    gram = h.mH @ h
    chol, info = torch.linalg.cholesky_ex(gram)
    if bool((info != 0).any()):
        raise LinksimError("detector: H^H H is singular for some sample (rank-deficient channel)")
    yr = torch.linalg.solve_triangular(chol, h.mH @ y, upper=False)
    return yr, chol.mH


def _sci(x: float) -> str:
    """4.3e9-style number."""
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant}e{int(exp)}"


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


class _SionnaHardDetector(_Detector):
    """Shared code of K-Best and ML: a Sionna detector per K, hard symbol indices."""

    def __init__(self, num_bits_per_symbol: int = 4, precision: str | None = None,
                 device: str | torch.device | None = None):
        super().__init__(num_bits_per_symbol, precision=precision, device=device)
        self._cache: dict = {}

    def _build(self, k: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_size(self, k: int) -> None:
        """Refuse problems too large for the detector (ML)."""

    def _chunk(self, k: int) -> int:
        return 1 << 30

    def _detector(self, k: int) -> torch.nn.Module:
        if k not in self._cache:
            self._cache[k] = self._build(k)
        return self._cache[k]

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var) -> torch.Tensor:
        y, h, nv = self._inputs(y, h, noise_var)
        b, m, t = y.shape
        k = h.shape[-1]
        self._check_size(k)
        if m < k and not self.serves_overloaded:
            raise LinksimError(f"{self.name}: needs at least as many receive antennas as users "
                               f"(M={m} < K={k})")
        # Equivalent K x K problem (exact for ML / K-Best, much smaller for M >> K); K > M (ML): as is
        yr, r = _square_reduction(y, h) if m >= k else (y, h)             # [b,n,T], [b,n,K]
        n = r.shape[1]
        yf = yr.transpose(1, 2).reshape(b * t, n)                         # [b*T, n]
        rf = r.unsqueeze(1).expand(b, t, n, k).reshape(b * t, n, k)
        eye = torch.eye(n, dtype=self.cdtype, device=y.device)
        sf = (nv.to(self.cdtype)[:, None, None, None] * eye).expand(b, t, n, n).reshape(b * t, n, n)
        det = self._detector(k)
        step = self._chunk(k)
        with torch.no_grad():
            idx = torch.cat([det(yf[i:i + step], rf[i:i + step], sf[i:i + step]).to(torch.int64)
                             for i in range(0, b * t, step)])             # [b*T, K]
        pts = constellation_points(self.num_bits_per_symbol, y.device, self.cdtype)
        return pts[idx].reshape(b, t, k).transpose(1, 2).contiguous()


@register_block("kbest", "detector")
class KBestDetector(_SionnaHardDetector):
    r"""K-Best tree search (Sionna ``KBestDetector``, complex representation, hard decisions).

    .. math::
        \hat{\mathbf{x}} \approx \mathop{\mathrm{argmin}}_{\mathbf{x}\in\mathcal{C}^K}
        \left\|\mathbf{y}' - \mathbf{R}\mathbf{x}\right\|^2
        = \mathop{\mathrm{argmin}}_{\mathbf{x}\in\mathcal{C}^K} \left\|\mathbf{y} - \mathbf{H}\mathbf{x}\right\|^2

    where :math:`\mathbf{H}^{\mathsf{H}}\mathbf{H} = \mathbf{R}^{\mathsf{H}}\mathbf{R}` (Cholesky) and
    :math:`\mathbf{y}' = \mathbf{R}^{-\mathsf{H}}\mathbf{H}^{\mathsf{H}}\mathbf{y}` (an exact
    K x K reduction, needs M >= K); the tree search keeps the ``k`` best partial vectors per level.
    The Sionna detector is built once for each number of users K seen; ``k`` is capped at
    :math:`|\mathcal{C}|^K` (then K-Best is exhaustive, i.e. ML).

    :param num_bits_per_symbol: bits per QAM symbol :math:`n` (:math:`|\mathcal{C}| = 2^n`)
    :param k: number of surviving paths per tree level
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input y: [b, M, T], complex. Received signals of ``T`` slots sharing the channel.
    :input h: [b, M, K], complex. Channel matrices :math:`\mathbf{H}`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` per antenna.

    :output x_hat: [b, K, T], ``cdtype``. Decided constellation points (hard decisions).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.detectors import KBestDetector, random_symbols
        h = torch.randn(8, 16, 4, dtype=torch.complex64)   # [b, M, K]
        y = h @ random_symbols((8, 4, 10), 4)[1] + 0.1 * torch.randn(8, 16, 10, dtype=h.dtype)
        x_hat = KBestDetector(k=16)(y, h, 0.01)   # [8, 4, 10] complex64
    """

    name = "kbest"
    serves_overloaded = False   # Sionna's K-Best searches the K x K triangular form: M >= K

    def __init__(self, num_bits_per_symbol: int = 4, k: int = 16, precision: str | None = None,
                 device: str | torch.device | None = None):
        super().__init__(num_bits_per_symbol, precision=precision, device=device)
        if int(k) < 1:
            raise LinksimError(f"kbest: k must be >= 1, got {k!r}")
        self.k = int(k)

    def _build(self, num_users: int):
        from sionna.phy.mimo import KBestDetector as _KBest
        k = min(self.k, (2 ** self.num_bits_per_symbol) ** num_users)
        return _KBest("symbol", num_users, k, constellation_type="qam",
                      num_bits_per_symbol=self.num_bits_per_symbol, hard_out=True,
                      precision=self.precision, device=str(self.device))


@register_block("ml", "detector")
class MLDetector(_SionnaHardDetector):
    r"""Maximum-likelihood detection (Sionna ``MaximumLikelihoodDetector``, hard decisions).

    .. math::
        \hat{\mathbf{x}} = \mathop{\mathrm{argmin}}_{\mathbf{x}\in\mathcal{C}^K}
        \left\|\mathbf{y} - \mathbf{H}\mathbf{x}\right\|^2

    exhaustive over the :math:`|\mathcal{C}|^K` hypotheses (on the same exact K x K reduction as
    :class:`KBestDetector` when M >= K, on ``y`` and ``H`` as they are for K > M; the "maxlog" metric makes the per-user decisions those of the jointly
    most likely vector). Refuses (``LinksimError``) problems with more than
    ``ML_MAX_HYPOTHESES`` (2^20) hypotheses; use ``kbest`` then.

    :param num_bits_per_symbol: bits per QAM symbol :math:`n` (:math:`|\mathcal{C}| = 2^n`)
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input y: [b, M, T], complex. Received signals of ``T`` slots sharing the channel.
    :input h: [b, M, K], complex. Channel matrices :math:`\mathbf{H}`.
    :input noise_var: float or [b] tensor. Noise variance :math:`\sigma^2` per antenna.

    :output x_hat: [b, K, T], ``cdtype``. Decided constellation points (hard decisions).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.detectors import MLDetector, random_symbols
        h = torch.randn(8, 16, 4, dtype=torch.complex64)   # [b, M, K]
        y = h @ random_symbols((8, 4, 10), 4)[1] + 0.1 * torch.randn(8, 16, 10, dtype=h.dtype)
        x_hat = MLDetector()(y, h, 0.01)   # [8, 4, 10] complex64
    """

    name = "ml"

    def _check_size(self, k: int) -> None:
        n = float(2 ** self.num_bits_per_symbol) ** k
        if n > ML_MAX_HYPOTHESES:
            raise LinksimError(f"ml: {qam_name(self.num_bits_per_symbol)} with K={k} users is "
                               f"{_sci(n)} hypotheses (limit {_sci(ML_MAX_HYPOTHESES)}); use kbest")

    def _chunk(self, k: int) -> int:
        hyp = (2 ** self.num_bits_per_symbol) ** k
        return max(1, _ML_CHUNK_ELEMENTS // (hyp * k))

    def _build(self, num_users: int):
        from sionna.phy.mimo import MaximumLikelihoodDetector as _ML
        return _ML("symbol", "maxlog", num_users, constellation_type="qam",
                   num_bits_per_symbol=self.num_bits_per_symbol, hard_out=True,
                   precision=self.precision, device=str(self.device))


__all__ = ["LMMSEDetector", "ZFDetector", "MFDetector", "KBestDetector", "MLDetector",
           "ML_MAX_HYPOTHESES", "noise_vector", "hard_decision", "symbols_to_bits",
           "random_symbols", "constellation_points"]
