"""Classical channel predictors behind the predictor protocol.

Protocol (every registered predictor)::

    predictor(h_hist [b, L, ...] complex64) -> h_future [b, P, ...] complex64

``P`` is the constructor's ``horizon``; the ``L`` history samples and the ``P`` future samples are
spaced uniformly in time (the future starts one spacing after the last history sample). For the
channel layout of :class:`linksim.ChannelSource` the trailing dims are ``[K, M, F]`` (users, BS
antennas, subcarriers).

- ``outdated``: the last history sample, repeated (no prediction: the CSI-ageing baseline).
- ``ar``: per-user least-squares autoregressive prediction fitted on the (noisy) history itself.
- ``genie``: the true future (a reference block: the chain hands it the truth).
"""
from __future__ import annotations


import torch

from ..errors import LinksimError
from ..registry import register_block


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


@register_block("outdated", "predictor")
class OutdatedPredictor(torch.nn.Module):
    """Outdated CSI: the last history sample repeated ``horizon`` times.

    ``h_hist [b, L, ...] -> h_hist[:, -1:] repeated -> [b, P, ...]`` (same dtype).

    :param horizon: number of future samples P
    """

    def __init__(self, horizon: int = 4):
        super().__init__()
        self.horizon = _check_horizon("outdated", horizon)

    def forward(self, h_hist: torch.Tensor) -> torch.Tensor:
        _check_hist("outdated", h_hist)
        last = h_hist[:, -1:]
        return last.expand(last.shape[0], self.horizon, *last.shape[2:]).clone()


@register_block("ar", "predictor")
class ARPredictor(torch.nn.Module):
    r"""Least-squares AR(p) linear prediction fitted on each sample's own (noisy) history.

    Model, for every user ``k`` of every sample ``b`` (complex coefficients shared by all the
    user's antennas and subcarriers, which all see the same Doppler spectrum)::

        h[t] = sum_{i=1..p} a_i h[t-i]          a in C^p

    Fitting: the ``(L-p) * M * F`` one-step equations of the history (many equations, few
    unknowns) are solved in the least-squares sense through the ``p x p`` normal equations with
    diagonal loading ``ridge * trace(R) / p`` (``R`` the Gram matrix). Optionally
    (``forward_backward``) the time-reversed equations ``h[t]^* = sum_i a_i h[t+i]^*`` are added
    (modified covariance method). Prediction is recursive: each predicted sample is fed back as a
    regressor for the next one. Nothing is trained: only the history of the sample is used.

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
      square the condition number); inputs and outputs stay complex64.
    - ``forward_backward=False``: adding the reversed equations was slightly worse on UMa
      (0.1-0.4 dB), so it is off by default.

    Shapes: ``h_hist [b, L, G, ...] -> [b, P, G, ...]`` where dim 2 (users for the ``[b,L,K,M,F]``
    channel layout) indexes the coefficient groups and all further dims are flattened into the
    series that share them; ``[b, L]`` and ``[b, L, N]`` inputs use one group per sample.
    Complex inputs keep their dtype (complex64 in, complex64 out); real inputs work too.

    :param horizon: number of future samples P
    :param order: AR order p (``None``: automatic as above; an explicit value is capped at ``L-1``)
    :param ridge: relative diagonal loading of the normal equations (>= 0)
    :param forward_backward: also use the time-reversed equations
    """

    def __init__(self, horizon: int = 4, order: int | None = None, ridge: float = 1e-6,
                 forward_backward: bool = False):
        super().__init__()
        self.horizon = _check_horizon("ar", horizon)
        if order is not None and (int(order) != order or order < 1):
            raise LinksimError(f"ar: order must be an integer >= 1 (or None), got {order!r}")
        if not ridge >= 0:
            raise LinksimError(f"ar: ridge must be >= 0, got {ridge!r}")
        self.order = None if order is None else int(order)
        self.ridge = float(ridge)
        self.forward_backward = bool(forward_backward)

    # -------------------------------------------------------------- fitting
    def effective_order(self, history: int, num_series: int) -> int:
        """The order used for ``history`` samples of ``num_series`` series sharing coefficients."""
        if self.order is not None:
            return max(1, min(self.order, history - 1))
        p = history - 1
        eq_factor = 2 if self.forward_backward else 1
        while p > 1 and eq_factor * (history - p) * num_series < 3 * p:
            p -= 1
        return max(p, 1)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """LS AR coefficients of grouped series.

        :param x: ``[B, L, N]`` (B groups, L times, N series sharing the coefficients)
        :returns: ``a [B, p]`` with ``x[t] ~ sum_i a[:, i-1] x[t-i]``
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
        _check_hist("ar", h_hist, min_len=2)
        b, n_t = h_hist.shape[:2]
        rest = h_hist.shape[2:]
        groups = rest[0] if len(rest) >= 2 else 1
        x = h_hist
        if not x.is_complex():
            x = x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)
        # [b, L, G, N] -> [b*G, L, N]
        x = x.reshape(b, n_t, groups, -1).transpose(1, 2).reshape(b * groups, n_t, -1)
        a = self.coefficients(x).to(x.dtype)                                         # [B, p]
        p = a.shape[-1]
        buf = list(x[:, -p:].unbind(1))        # last p samples, oldest first
        out = []
        for _ in range(self.horizon):
            nxt = sum(a[:, i, None] * buf[-1 - i] for i in range(p))
            out.append(nxt)
            buf.append(nxt)
        y = torch.stack(out, 1)                                                      # [B, P, N]
        y = y.reshape(b, groups, self.horizon, -1).transpose(1, 2)
        y = y.reshape(b, self.horizon, *rest)
        if not h_hist.is_complex():
            y = y.real
        return y.to(h_hist.dtype)


@register_block("genie", "reference", serves="predictor")
class GeniePredictor(torch.nn.Module):
    """Genie: the true future channel, the upper reference of every predictor.

    A reference block (kind ``reference``, serving ``predictor``): the chain hands it the true
    future, ``genie(h_hist [b,L,...], h_future [b,P,...]) -> h_future`` (a copy).

    :param horizon: number of future samples P
    """

    def __init__(self, horizon: int = 4):
        super().__init__()
        self.horizon = _check_horizon("genie", horizon)

    def forward(self, h_hist: torch.Tensor, h_future: torch.Tensor) -> torch.Tensor:
        if h_future.shape[1] != self.horizon:
            raise LinksimError(f"genie: expected {self.horizon} future samples, got {h_future.shape[1]}")
        return h_future.clone()


__all__ = ["OutdatedPredictor", "ARPredictor", "GeniePredictor"]
