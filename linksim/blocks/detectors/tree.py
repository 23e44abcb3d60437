"""Sionna's tree searches as detector blocks: ``kbest`` (K-Best) and ``ml`` (exhaustive
maximum likelihood), hard decisions, on the exact K x K reduction of the problem when M >= K."""
from __future__ import annotations

import torch

from ...errors import LinksimError
from ...registry import register_block
from ..base import report_progress
from ..qam import constellation_points, qam_name
from .base import _Detector

#: ``ml`` refuses problems with more hypotheses than this (2^20, about 1.0e6).
ML_MAX_HYPOTHESES = 2 ** 20
#: ``ml`` in a sweep: most hypothesis evaluations per point (hypotheses x symbol vectors per drop
#: x drops); 1e10 takes 20 min or more on one CPU core (16-QAM, K = 4: ~0.13 us each, 2.4 s per
#: drop of 48 subcarriers x 6 slots on an idle core, 4 s under load)
ML_MAX_EVALUATIONS = 1e10
#: complex entries of the largest intermediate tensor inside Sionna's ML detector per chunk
_ML_CHUNK_ELEMENTS = 2 ** 22


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

    def _overloaded_system(self, y, h, nv):
        """The system searched when K > M (default, ML: ``y = h x + n`` as it is)."""
        return y, h

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
                               f"(M={m} < K={k}): {self.overloaded_why}")
        if m < k:                         # K > M: the block's own system (ML: as is; K-Best: extended)
            y, h = self._overloaded_system(y, h, nv)
            m = y.shape[1]
        # Equivalent K x K problem (exact for ML / K-Best, much smaller for M >> K)
        yr, r = _square_reduction(y, h) if m >= k else (y, h)             # [b,n,T], [b,n,K]
        n = r.shape[1]
        yf = yr.transpose(1, 2).reshape(b * t, n)                         # [b*T, n]
        rf = r.unsqueeze(1).expand(b, t, n, k).reshape(b * t, n, k)
        eye = torch.eye(n, dtype=self.cdtype, device=y.device)
        sf = (nv.to(self.cdtype)[:, None, None, None] * eye).expand(b, t, n, n).reshape(b * t, n, n)
        det = self._detector(k)
        step, parts = self._chunk(k), []
        with torch.no_grad():
            for i in range(0, b * t, step):
                parts.append(det(yf[i:i + step], rf[i:i + step], sf[i:i + step]).to(torch.int64))
                if step < b * t:                  # a long call: say how far it is (progress bars)
                    report_progress(min(i + step, b * t) / (b * t))
        idx = torch.cat(parts)                                            # [b*T, K]
        pts = constellation_points(self.num_bits_per_symbol, y.device, self.cdtype)
        return pts[idx].reshape(b, t, k).transpose(1, 2).contiguous()


@register_block("kbest", "detector")
class KBestDetector(_SionnaHardDetector):
    r"""K-Best tree search (Sionna ``KBestDetector``, complex representation, hard decisions; K > M: MMSE-extended).

    .. math::
        \hat{\mathbf{x}} \approx \mathop{\mathrm{argmin}}_{\mathbf{x}\in\mathcal{C}^K}
        \left\|\mathbf{y}' - \mathbf{R}\mathbf{x}\right\|^2
        = \mathop{\mathrm{argmin}}_{\mathbf{x}\in\mathcal{C}^K} \left\|\mathbf{y} - \mathbf{H}\mathbf{x}\right\|^2

    where :math:`\mathbf{H}^{\mathsf{H}}\mathbf{H} = \mathbf{R}^{\mathsf{H}}\mathbf{R}` (Cholesky) and
    :math:`\mathbf{y}' = \mathbf{R}^{-\mathsf{H}}\mathbf{H}^{\mathsf{H}}\mathbf{y}` (an exact
    K x K reduction, needs M >= K); the tree search keeps the ``k`` best partial vectors per level.
    The Sionna detector is built once for each number of users K seen; ``k`` is capped at
    :math:`|\mathcal{C}|^K` (then K-Best is exhaustive, i.e. ML).

    Overloaded (K > M) the triangular form does not exist; the search then runs on the
    MMSE-extended system (Wübben et al. 2003, the regularised model of the sorted-QR detectors)

    .. math::
        \underline{\mathbf{y}} = \begin{pmatrix}\mathbf{y}\\ \mathbf{0}_K\end{pmatrix}, \quad
        \underline{\mathbf{H}} = \begin{pmatrix}\mathbf{H}\\ \sigma\mathbf{I}_K\end{pmatrix}, \qquad
        \hat{\mathbf{x}} \approx \mathop{\mathrm{argmin}}_{\mathbf{x}\in\mathcal{C}^K}
        \left\|\mathbf{y} - \mathbf{H}\mathbf{x}\right\|^2 + \sigma^2\|\mathbf{x}\|^2

    (M + K >= K rows), which is ML for constant-modulus points and close to it for QAM.

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

    def _overloaded_system(self, y, h, nv):
        """The MMSE-extended system ``[y; 0]``, ``[H; sigma I]`` (see the class docstring)."""
        b, _, t = y.shape
        k = h.shape[-1]
        eye = torch.eye(k, dtype=h.dtype, device=h.device)
        sigma = nv.to(h.dtype).sqrt()[:, None, None]
        return torch.cat([y, y.new_zeros(b, k, t)], 1), torch.cat([h, sigma * eye.expand(b, k, k)], 1)

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
    r"""Maximum-likelihood detection (Sionna ``MaximumLikelihoodDetector``, hard decisions); slow: |C|^K hypotheses per symbol vector (16-QAM, K = 4: ~2.4 s per drop), a sweep point over 1e10 evaluations is refused (use kbest).

    .. math::
        \hat{\mathbf{x}} = \mathop{\mathrm{argmin}}_{\mathbf{x}\in\mathcal{C}^K}
        \left\|\mathbf{y} - \mathbf{H}\mathbf{x}\right\|^2

    exhaustive over the :math:`|\mathcal{C}|^K` hypotheses (on the same exact K x K reduction as
    :class:`KBestDetector` when M >= K, on ``y`` and ``H`` as they are for K > M; the "maxlog" metric makes the per-user decisions those of the jointly
    most likely vector). Refuses (``LinksimError``) problems with more than
    ``ML_MAX_HYPOTHESES`` (2^20) hypotheses; use ``kbest`` then. A sweep refuses, before any
    compute, a point of more than ``ML_MAX_EVALUATIONS`` (1e10) hypothesis evaluations
    (:meth:`check_work`); a long call reports its progress per chunk
    (:func:`~linksim.blocks.base.report_progress`), so a sweep's bar moves within a batch.

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

    def check_work(self, scenario, num_users: int, drops: int, setting: str = "max_samples") -> None:
        r"""Refuse, in one line, a sweep point whose exhaustive search would take hours.

        .. math::
            |\mathcal{C}|^K \cdot F \cdot T \cdot D \le \texttt{ML\_MAX\_EVALUATIONS} = 10^{10}

        for :math:`F` subcarriers, :math:`T` = ``detection.symbols_per_sample`` slots and at most
        :math:`D` drops (the point's budget) of the detection link.

        :param scenario: the point's :class:`~linksim.Scenario`
        :param num_users: K at the point
        :param drops: most drops the point may run (``Chain.budget``)
        :param setting: the scenario key that sets ``drops``, named in the advice

        .. rubric:: Examples

        .. code-block:: python

            import linksim
            sc = linksim.load_scenario("scenarios/quick.toml")      # 16-QAM, K = 4, 4096 drops
            ml = linksim.blocks.get("ml", kind="detector", scenario=sc)
            ml.check_work(sc, 4, 512)     # 9.7e9: accepted
            ml.check_work(sc, 4, 4096)    # LinksimError: ... 7.7e10 hypothesis evaluations ...
        """
        self._check_size(num_users)
        hyp = (2 ** self.num_bits_per_symbol) ** num_users
        vectors = scenario.channel.num_subcarriers * scenario.detection.symbols_per_sample
        evaluations = hyp * vectors * drops
        if evaluations > ML_MAX_EVALUATIONS:
            most = int(ML_MAX_EVALUATIONS // (hyp * vectors))
            fewer = f"at most {most} drops ({setting})" if most else "fewer users or a smaller QAM"
            raise LinksimError(f"ml: {qam_name(self.num_bits_per_symbol)}, K={num_users}: {hyp} "
                               f"hypotheses x {vectors} symbol vectors per drop x {drops} drops = "
                               f"{_sci(evaluations)} hypothesis evaluations per point (limit "
                               f"{_sci(ML_MAX_EVALUATIONS)}, 20 min or more on one CPU core): hours; "
                               f"use kbest, or {fewer}")

    def _chunk(self, k: int) -> int:
        hyp = (2 ** self.num_bits_per_symbol) ** k
        return max(1, _ML_CHUNK_ELEMENTS // (hyp * k))

    def _build(self, num_users: int):
        from sionna.phy.mimo import MaximumLikelihoodDetector as _ML
        return _ML("symbol", "maxlog", num_users, constellation_type="qam",
                   num_bits_per_symbol=self.num_bits_per_symbol, hard_out=True,
                   precision=self.precision, device=str(self.device))
