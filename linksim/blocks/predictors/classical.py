r"""The classical per-sample predictors: ``outdated``, ``ar`` and the ``genie`` reference.

``outdated`` repeats the last sample (the CSI-ageing baseline), ``ar`` fits a least-squares
autoregressive model on each sample's own history; ``genie`` is a reference block handed the true
future. The shared constructor (:class:`_Predictor`) and input checks live here too; the protocol
is described in :mod:`linksim.blocks.predictors`.
"""
from __future__ import annotations

import torch

from ...errors import LinksimError
from ...registry import register_block
from ..base import Block


def _check_hist(name: str, h_hist: torch.Tensor, min_len: int = 1) -> None:
    if not torch.is_tensor(h_hist) or h_hist.dim() < 2:
        raise LinksimError(f"{name}: expected h_hist [b, L, ...], got "
                           f"{tuple(h_hist.shape) if torch.is_tensor(h_hist) else type(h_hist).__name__}")
    if h_hist.shape[1] < min_len:
        raise LinksimError(f"{name}: needs at least {min_len} history samples, got L={h_hist.shape[1]}")


def _check_horizon(name: str, horizon) -> int:
    if int(horizon) != horizon or int(horizon) < 1:
        raise LinksimError(f"{name}: horizon must be an integer >= 1, got {horizon!r}")
    return int(horizon)


class _Predictor(Block):
    """Shared constructor (``horizon``, precision, device) and input casting of the predictors."""

    def __init__(self, horizon: int = 4, precision: str | None = None,
                 device: str | torch.device | None = None):
        super().__init__(precision=precision, device=device)
        self.horizon = _check_horizon(self.name, horizon)

    def _series(self, x):
        """A tensor on the device: complex in ``cdtype``, real floating point in ``dtype``."""
        x = self.cast(x)
        if torch.is_tensor(x) and x.is_floating_point():
            x = x.to(self.dtype)
        return x


@register_block("outdated", "predictor")
class OutdatedPredictor(_Predictor):
    r"""Outdated CSI: the last history sample repeated (no prediction, the CSI-ageing baseline).

    .. math::
        \hat{\mathbf{H}}[t+j] = \mathbf{H}[t], \qquad j = 1, \dots, P

    :param horizon: number of future samples :math:`P`
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input h_hist: [b, L, ...], complex (or real). Channel history, oldest first.

    :output h_future: [b, P, ...], ``cdtype`` (``dtype`` for real inputs). ``h_hist[:, -1]``
        repeated :math:`P` times.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.predictors import OutdatedPredictor
        h_hist = torch.randn(8, 16, 4, 16, 48, dtype=torch.complex64)   # [b, L, K, M, F]
        h_pred = OutdatedPredictor(horizon=4)(h_hist)                    # [8, 4, 4, 16, 48]
        assert torch.equal(h_pred[:, 3], h_hist[:, -1])
    """

    name = "outdated"

    def forward(self, h_hist: torch.Tensor) -> torch.Tensor:
        h_hist = self._series(h_hist)
        _check_hist("outdated", h_hist)
        last = h_hist[:, -1:]
        return last.expand(last.shape[0], self.horizon, *last.shape[2:]).clone()


def extrapolate(x: torch.Tensor, a: torch.Tensor, steps: int) -> torch.Tensor:
    r"""Run the linear recursion :math:`\hat{x}[t+j] = \sum_i a_i \hat{x}[t+j-i]` ``steps`` times.

    Each predicted sample is fed back as a regressor for the next one; series ``n`` uses the
    coefficients ``a[n]`` for all its trailing entries.

    :input x: [N, L, ...], complex. History, oldest first (the last ``p`` samples start the recursion).
    :input a: [N, p], complex. Coefficients (column ``i-1`` holds :math:`a_i`).
    :input steps: int. Number of predicted samples.

    :output y: [N, steps, ...], dtype of ``a``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.predictors.classical import extrapolate
        x = torch.ones(1, 4, dtype=torch.complex128)                  # a constant series
        y = extrapolate(x, torch.ones(1, 1, dtype=torch.complex128), 3)  # x[t] = x[t-1]
        assert torch.equal(y, torch.ones(1, 3, dtype=torch.complex128))
    """
    p = a.shape[1]
    a = a.reshape(*a.shape, *([1] * (x.dim() - 2)))          # broadcast over trailing dims
    buf = list(x[:, -p:].to(a.dtype).unbind(1))
    out = []
    for _ in range(steps):
        nxt = sum(a[:, i] * buf[-1 - i] for i in range(p))
        out.append(nxt)
        buf.append(nxt)
    return torch.stack(out, 1)


@register_block("ar", "predictor")
class ARPredictor(_Predictor):
    r"""Least-squares AR(p) linear prediction fitted on each sample's own (noisy) history.

    For every user :math:`k` of every sample (complex coefficients shared by all the user's
    antennas and subcarriers, which all see the same Doppler spectrum):

    .. math::
        \mathbf{h}[t] = \sum_{i=1}^{p} a_i\,\mathbf{h}[t-i], \qquad \mathbf{a}\in\mathbb{C}^p, \qquad
        \hat{\mathbf{a}} = \left(\mathbf{R} + \lambda\mathbf{I}_p\right)^{-1}\boldsymbol{\Phi}^{\mathsf{H}}\boldsymbol{\phi}

    where the rows of :math:`\boldsymbol{\Phi}` are the regressors
    :math:`(h[t-1], \dots, h[t-p])` and :math:`\boldsymbol{\phi}` the targets :math:`h[t]` of the
    ``(L-p) * M * F`` one-step equations of the history (many equations, few unknowns),
    :math:`\mathbf{R} = \boldsymbol{\Phi}^{\mathsf{H}}\boldsymbol{\Phi}` and
    :math:`\lambda = \mathrm{ridge}\cdot\operatorname{tr}(\mathbf{R})/p` (diagonal loading).
    Optionally (``forward_backward``) the time-reversed equations
    :math:`h[t]^* = \sum_i a_i h[t+i]^*` are added (modified covariance method). Prediction is
    recursive: each predicted sample is fed back as a regressor for the next one. Nothing is
    trained: only the history of the sample is used.

    Design (measured on 3GPP UMa NLOS, 2.4 GHz, 0.5 ms spacing, 16 antennas x 48 subcarriers,
    L=16, P=4, history SNR 5-30 dB; the NMSE improves monotonically with the order):

    - ``order=None`` (default) uses the longest filter the history allows, ``p = L - 1``, reduced
      until there are at least 3 equations per unknown (so a single short series gets a short
      filter). A long filter on a low-pass (Doppler-limited) process also averages the white
      history noise: at 20 dB it predicts below the -20 dB noise floor at 10 km/h.
    - ``ridge=1e-6``: noise in the regressors already loads the diagonal by about 1/SNR, so the
      explicit loading only matters for (nearly) noiseless, ill-conditioned histories (constant or
      very slow channels, where it selects the minimum-norm filter); larger values bias noiseless
      predictions (noiseless UMa at 10 km/h: -57 dB with 1e-6, -45 dB with 1e-4) and make no
      difference at 20-30 dB. The normal equations are formed and solved in complex128 (they
      square the condition number) at either precision; inputs and outputs are in ``cdtype``.
    - ``forward_backward=False``: adding the reversed equations was slightly worse on UMa
      (0.1-0.4 dB), so it is off by default.

    :param horizon: number of future samples :math:`P`
    :param order: AR order :math:`p` (``None``: automatic as above; an explicit value is capped
        at ``L-1``)
    :param ridge: relative diagonal loading of the normal equations (>= 0)
    :param forward_backward: also use the time-reversed equations
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input h_hist: [b, L, G, ...], complex (or real). Channel history, oldest first, ``L >= 2``.
        Dim 2 (users for the ``[b, L, K, M, F]`` layout) indexes the coefficient groups and all
        further dims are flattened into the series that share them; ``[b, L]`` and ``[b, L, N]``
        inputs use one group per sample.

    :output h_future: [b, P, G, ...], ``cdtype`` (``dtype`` for real inputs). The prediction
        :math:`\hat{\mathbf{h}}[t+1], \dots, \hat{\mathbf{h}}[t+P]`.

    .. rubric:: Examples

    .. code-block:: python

        import math, torch
        from linksim.blocks.predictors import ARPredictor
        t = torch.arange(20.0)
        h = torch.exp(2j * math.pi * 0.05 * t)[None, :, None, None].repeat(4, 1, 2, 8)  # [b, L, K, N]
        h_pred = ARPredictor(horizon=4)(h[:, :16])                                       # [4, 4, 2, 8]
        assert (h_pred - h[:, 16:]).abs().max() < 1e-3
    """

    name = "ar"

    def __init__(self, horizon: int = 4, order: int | None = None, ridge: float = 1e-6,
                 forward_backward: bool = False, precision: str | None = None,
                 device: str | torch.device | None = None):
        super().__init__(horizon, precision=precision, device=device)
        if order is not None and (int(order) != order or order < 1):
            raise LinksimError(f"ar: order must be an integer >= 1 (or None), got {order!r}")
        if not ridge >= 0:
            raise LinksimError(f"ar: ridge must be >= 0, got {ridge!r}")
        self.order = None if order is None else int(order)
        self.ridge = float(ridge)
        self.forward_backward = bool(forward_backward)

    # -------------------------------------------------------------- fitting
    def effective_order(self, history: int, num_series: int) -> int:
        r"""The AR order :math:`p` used for a history (see the ``order`` design note).

        :input history: int. Number of history samples :math:`L`.
        :input num_series: int. Number of series sharing the coefficients.

        :output p: int. ``order`` capped at ``L-1``; automatic: the largest :math:`p \le L-1`
            with at least 3 equations per unknown (at least 1).

        .. rubric:: Examples

        .. code-block:: python

            from linksim.blocks.predictors import ARPredictor
            assert ARPredictor().effective_order(16, 768) == 15
            assert ARPredictor().effective_order(16, 1) == 4      # 12 equations, 4 unknowns
        """
        if self.order is not None:
            return max(1, min(self.order, history - 1))
        p = history - 1
        eq_factor = 2 if self.forward_backward else 1
        while p > 1 and eq_factor * (history - p) * num_series < 3 * p:
            p -= 1
        return max(p, 1)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        r"""Least-squares AR coefficients :math:`\hat{\mathbf{a}}` of grouped series (in complex128).

        :input x: [B, L, N], complex. ``B`` groups of ``N`` series of ``L`` samples; the series
            of a group share the coefficients.

        :output a: [B, p], torch.complex128. Coefficients with
            :math:`x[t] \approx \sum_{i=1}^{p} a_{i-1} x[t-i]` (column ``i-1`` holds :math:`a_i`).

        .. rubric:: Examples

        .. code-block:: python

            import torch
            from linksim.blocks.predictors import ARPredictor
            x = torch.randn(6, 16, 32, dtype=torch.complex64)
            a = ARPredictor(order=5).coefficients(x)                       # [6, 5] complex128
        """
        n_t = x.shape[1]
        p = self.effective_order(n_t, x.shape[2])
        x = x.to(torch.complex128)      # the normal equations square the condition number
        # regressors: column i holds x[t-1-i], target x[t], t = p..L-1
        reg = torch.stack([x[:, p - 1 - i:n_t - 1 - i] for i in range(p)], dim=-1)  # [B, L-p, N, p]
        tgt = x[:, p:]                                                               # [B, L-p, N]
        reg = reg.reshape(x.shape[0], -1, p)
        tgt = tgt.reshape(x.shape[0], -1)
        if self.forward_backward:
            # x[t]^* = sum_i a_i x[t+i]^*, t = 0..L-1-p
            breg = torch.stack([x[:, 1 + i:n_t - p + 1 + i] for i in range(p)], dim=-1).conj()
            btgt = x[:, :n_t - p].conj()
            reg = torch.cat([reg, breg.reshape(x.shape[0], -1, p)], dim=1)
            tgt = torch.cat([tgt, btgt.reshape(x.shape[0], -1)], dim=1)
        gram = reg.mH @ reg                                                          # [B, p, p]
        rhs = reg.mH @ tgt.unsqueeze(-1)                                             # [B, p, 1]
        load = self.ridge * gram.diagonal(dim1=-2, dim2=-1).real.sum(-1) / p         # [B]
        load = load.clamp_min(torch.finfo(load.dtype).tiny)
        eye = torch.eye(p, dtype=gram.dtype, device=gram.device)
        a = torch.linalg.solve(gram + load[:, None, None] * eye, rhs)
        return a.squeeze(-1)

    # -------------------------------------------------------------- prediction
    def forward(self, h_hist: torch.Tensor) -> torch.Tensor:
        h_hist = self._series(h_hist)
        _check_hist("ar", h_hist, min_len=2)
        b, n_t = h_hist.shape[:2]
        rest = h_hist.shape[2:]
        groups = rest[0] if len(rest) >= 2 else 1
        x = h_hist if h_hist.is_complex() else h_hist.to(self.cdtype)
        # [b, L, G, N] -> [b*G, L, N]
        x = x.reshape(b, n_t, groups, -1).transpose(1, 2).reshape(b * groups, n_t, -1)
        y = extrapolate(x, self.coefficients(x).to(x.dtype), self.horizon)           # [B, P, N]
        y = y.reshape(b, groups, self.horizon, -1).transpose(1, 2)
        y = y.reshape(b, self.horizon, *rest)
        return y if h_hist.is_complex() else y.real


@register_block("genie", "reference", serves="predictor")
class GeniePredictor(_Predictor):
    r"""Genie: the true future channel, the upper reference of every predictor.

    A reference block (kind ``reference``, serving ``predictor``): the chain hands it the true
    future, which it returns (a copy):

    .. math::
        \hat{\mathbf{H}}[t+j] = \mathbf{H}[t+j], \qquad j = 1, \dots, P

    :param horizon: number of future samples :math:`P`
    :param precision: ``"single"`` | ``"double"``; ``None``: ``linksim.config.precision``
    :param device: where inputs go and outputs live; ``None``: ``linksim.config.device``

    :input h_hist: [b, L, ...], complex. Channel history (unused; the predictor signature).
    :input h_future: [b, P, ...], complex. The true future channel.

    :output h_future: [b, P, ...], ``cdtype``. A copy of ``h_future``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.predictors import GeniePredictor
        h = torch.randn(8, 20, 4, 16, 48, dtype=torch.complex64)     # [b, L+P, K, M, F]
        h_pred = GeniePredictor(horizon=4)(h[:, :16], h[:, 16:])      # [8, 4, 4, 16, 48]
        assert torch.equal(h_pred, h[:, 16:])
    """

    name = "genie"

    def forward(self, h_hist: torch.Tensor, h_future: torch.Tensor) -> torch.Tensor:
        h_future = self._series(h_future)
        if h_future.shape[1] != self.horizon:
            raise LinksimError(f"genie: expected {self.horizon} future samples, got {h_future.shape[1]}")
        return h_future.clone()


__all__ = ["OutdatedPredictor", "ARPredictor", "GeniePredictor"]
