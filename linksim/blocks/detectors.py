"""Classical uplink MIMO detectors (Sionna) behind the detector protocol.

Protocol (every registered detector)::

    detector(y [b, M, T] complex64, h [b, M, K] complex64, noise_var float | [b]) -> x_hat [b, K, T] complex64

with ``y = h @ x + n``, ``x`` i.i.d. from Sionna's unit-energy square QAM
(``Constellation("qam", num_bits_per_symbol)``) and ``n ~ CN(0, noise_var I_M)``; the ``T`` symbol
slots share the channel ``h``.

- ``lmmse``, ``zf_det``, ``mf``: Sionna's linear equalisers; the output is the *unbiased* soft
  estimate (``x_hat_k = x_k + e_k``; Sionna scales by ``diag(GH)^-1`` for LMMSE/MF).
- ``kbest``, ``ml``: Sionna's tree-search / exhaustive detectors with hard symbol decisions; the
  output is the decided constellation points.

The symbol helpers of :mod:`linksim.blocks.qam` (``hard_decision``, ``symbols_to_bits``,
``random_symbols``, ...) are re-exported here.
"""
from __future__ import annotations

import torch

from ..errors import LinksimError
from .qam import (bits_to_symbols, constellation_points, hard_decision, qam_name,  # noqa: F401
                  random_symbols, symbols_to_bits)
from ..registry import register_block

#: ``ml`` refuses problems with more hypotheses than this (2^20, about 1.0e6).
ML_MAX_HYPOTHESES = 2 ** 20
#: complex entries of the largest intermediate tensor inside Sionna's ML detector per chunk
_ML_CHUNK_ELEMENTS = 2 ** 22
_MIN_NOISE_VAR = 1e-10


# --------------------------------------------------------------------------- helpers
def _check_inputs(name: str, y: torch.Tensor, h: torch.Tensor) -> None:
    if y.dim() != 3 or h.dim() != 3 or y.shape[0] != h.shape[0] or y.shape[1] != h.shape[1]:
        raise LinksimError(f"{name}: expected y [b,M,T] and h [b,M,K] with equal b and M, "
                           f"got y {tuple(y.shape)} and h {tuple(h.shape)}")


def noise_vector(noise_var, b: int, device, dtype=torch.float32) -> torch.Tensor:
    """``noise_var`` (float, 0-d or ``[b]``) as a real ``[b]`` tensor, clamped away from 0."""
    nv = torch.as_tensor(noise_var, device=device)
    nv = (nv.real if nv.is_complex() else nv).to(dtype)
    if nv.dim() == 0:
        nv = nv.expand(b)
    nv = nv.reshape(-1)
    if nv.numel() != b:
        raise LinksimError(f"noise_var must be a float or have shape [{b}], got {tuple(nv.shape)}")
    return nv.clamp_min(_MIN_NOISE_VAR)


def _noise_cov(nv: torch.Tensor, m: int) -> torch.Tensor:
    """``nv [b]`` -> ``S = nv I_M`` complex64 ``[b, 1, M, M]`` (broadcasts over the T slots), or one
    shared ``[M, M]`` when every sample has the same noise variance (Sionna then whitens once)."""
    eye = torch.eye(m, dtype=torch.complex64, device=nv.device)
    if bool((nv == nv[0]).all()):
        return nv[0].to(torch.complex64) * eye
    return nv.to(torch.complex64)[:, None, None, None] * eye


def _square_reduction(y: torch.Tensor, h: torch.Tensor):
    """Sufficient statistic of ``y = h x + n`` for M >= K: ``y' = R x + n'`` with ``R`` K x K.

    ``H^H H = L L^H`` (Cholesky), ``R = L^H``, ``y' = L^-1 H^H y``; then
    ``||y - Hx||^2 = ||y' - Rx||^2 + const`` and ``n' ~ CN(0, noise_var I_K)``, so ML and K-Best
    decisions are unchanged while the work per hypothesis drops from M to K.

    :param y: ``[b, M, T]``; :param h: ``[b, M, K]``
    :returns: ``y' [b, K, T]``, ``R [b, K, K]``
    """
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


class _LinearDetector(torch.nn.Module):
    """Shared code of the Sionna linear equalisers."""

    name = "linear"

    def __init__(self, num_bits_per_symbol: int = 4):
        super().__init__()
        self.num_bits_per_symbol = int(num_bits_per_symbol)

    def _equalise(self, y, h, s):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var) -> torch.Tensor:
        _check_inputs(self.name, y, h)
        b, m, _ = y.shape
        nv = noise_vector(noise_var, b, y.device)
        yt = y.to(torch.complex64).transpose(1, 2)            # [b, T, M]
        hb = h.to(torch.complex64).unsqueeze(1)               # [b, 1, M, K] (broadcast over T)
        x_hat, _ = self._equalise(yt, hb, _noise_cov(nv, m))   # [b, T, K]
        return x_hat.transpose(1, 2).to(torch.complex64).contiguous()


@register_block("lmmse", "detector")
class LMMSEDetector(_LinearDetector):
    """LMMSE equaliser (Sionna ``lmmse_equalizer``): unbiased soft estimates ``x_hat [b,K,T]``.

    ``x_hat = diag(GH)^-1 G y`` with ``G = (H^H H + noise_var I)^-1 H^H`` (after whitening).

    :param num_bits_per_symbol: accepted for the common detector signature (unused)
    """

    name = "lmmse"

    def _equalise(self, y, h, s):
        from sionna.phy.mimo import lmmse_equalizer
        return lmmse_equalizer(y, h, s, whiten_interference=True)


@register_block("zf_det", "detector")
class ZFDetector(_LinearDetector):
    """Zero-forcing equaliser (Sionna ``zf_equalizer``): ``x_hat = (H^H H)^-1 H^H y``, ``[b,K,T]``.

    :param num_bits_per_symbol: accepted for the common detector signature (unused)
    """

    name = "zf_det"

    def _equalise(self, y, h, s):
        from sionna.phy.mimo import zf_equalizer
        return zf_equalizer(y, h, s)


@register_block("mf", "detector")
class MFDetector(_LinearDetector):
    """Matched filter (Sionna ``mf_equalizer``): ``x_hat = diag(H^H H)^-1 H^H y``, ``[b,K,T]``.

    :param num_bits_per_symbol: accepted for the common detector signature (unused)
    """

    name = "mf"

    def _equalise(self, y, h, s):
        from sionna.phy.mimo import mf_equalizer
        return mf_equalizer(y, h, s)


class _SionnaHardDetector(torch.nn.Module):
    """Shared code of K-Best and ML: a Sionna detector per (K, device), hard symbol indices."""

    name = "hard"

    def __init__(self, num_bits_per_symbol: int = 4):
        super().__init__()
        self.num_bits_per_symbol = int(num_bits_per_symbol)
        self._cache: dict = {}

    def _build(self, k: int, device: str):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_size(self, k: int) -> None:
        pass

    def _chunk(self, k: int) -> int:
        return 1 << 30

    def _detector(self, k: int, device) -> torch.nn.Module:
        key = (k, str(device))
        if key not in self._cache:
            self._cache[key] = self._build(k, str(device))
        return self._cache[key]

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var) -> torch.Tensor:
        _check_inputs(self.name, y, h)
        b, m, t = y.shape
        k = h.shape[-1]
        self._check_size(k)
        if m < k:
            raise LinksimError(f"{self.name}: needs at least as many receive antennas as users "
                               f"(M={m} < K={k})")
        nv = noise_vector(noise_var, b, y.device)
        y = y.to(torch.complex64)
        h = h.to(torch.complex64)
        # Equivalent K x K problem (exact for ML / K-Best, much smaller for M >> K)
        yr, r = _square_reduction(y, h)                                   # [b,K,T], [b,K,K]
        yf = yr.transpose(1, 2).reshape(b * t, k)                         # [b*T, K]
        rf = r.unsqueeze(1).expand(b, t, k, k).reshape(b * t, k, k)
        eye = torch.eye(k, dtype=torch.complex64, device=y.device)
        sf = (nv.to(torch.complex64)[:, None, None, None] * eye).expand(b, t, k, k).reshape(b * t, k, k)
        det = self._detector(k, y.device)
        step = self._chunk(k)
        with torch.no_grad():
            idx = torch.cat([det(yf[i:i + step], rf[i:i + step], sf[i:i + step]).to(torch.int64)
                             for i in range(0, b * t, step)])             # [b*T, K]
        pts = constellation_points(self.num_bits_per_symbol, y.device)
        return pts[idx].reshape(b, t, k).transpose(1, 2).contiguous()


@register_block("kbest", "detector")
class KBestDetector(_SionnaHardDetector):
    """K-Best tree search (Sionna ``KBestDetector``, complex representation, hard symbol decisions).

    Returns the decided constellation points ``x_hat [b,K,T]`` complex64. The Sionna detector is
    built lazily for each number of users K seen; ``k`` is capped at ``|C|^K`` (then K-Best is
    exhaustive, i.e. ML).

    :param num_bits_per_symbol: bits per QAM symbol
    :param k: number of surviving paths per tree level (default 16)
    """

    name = "kbest"

    def __init__(self, num_bits_per_symbol: int = 4, k: int = 16):
        super().__init__(num_bits_per_symbol)
        if int(k) < 1:
            raise LinksimError(f"kbest: k must be >= 1, got {k!r}")
        self.k = int(k)

    def _build(self, num_users: int, device: str):
        from sionna.phy.mimo import KBestDetector as _KBest
        k = min(self.k, (2 ** self.num_bits_per_symbol) ** num_users)
        return _KBest("symbol", num_users, k, constellation_type="qam",
                      num_bits_per_symbol=self.num_bits_per_symbol, hard_out=True, device=device)


@register_block("ml", "detector")
class MLDetector(_SionnaHardDetector):
    """Maximum-likelihood detection (Sionna ``MaximumLikelihoodDetector``, hard symbol decisions).

    Uses the "maxlog" metric so that the per-user decisions are those of the jointly most likely
    vector ``argmin_x ||y - Hx||^2`` (exhaustive over ``|C|^K`` hypotheses). Returns the decided
    constellation points ``x_hat [b,K,T]`` complex64. Refuses (``LinksimError``) problems with more
    than ``ML_MAX_HYPOTHESES`` (2^20) hypotheses; use ``kbest`` then.

    :param num_bits_per_symbol: bits per QAM symbol
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

    def _build(self, num_users: int, device: str):
        from sionna.phy.mimo import MaximumLikelihoodDetector as _ML
        return _ML("symbol", "maxlog", num_users, constellation_type="qam",
                   num_bits_per_symbol=self.num_bits_per_symbol, hard_out=True, device=device)


__all__ = ["LMMSEDetector", "ZFDetector", "MFDetector", "KBestDetector", "MLDetector",
           "ML_MAX_HYPOTHESES", "hard_decision", "symbols_to_bits", "bits_to_symbols",
           "random_symbols", "constellation_points"]
