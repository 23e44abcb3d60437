"""Learned channel predictors: per-antenna parallel prediction (as in LLM4CP) with RNN/LSTM/GRU or
Transformer sequence cores.

One *series* is one BS antenna's channel (towards one user) over time; each time step is the
vector of its ``F`` subcarriers, fed to the network as ``2F`` reals (real parts, then imaginary
parts). All four kinds share :class:`SeriesPredictor`; only the sequence core differs:

1. normalise: divide the series by the RMS of its own history, ``r = sqrt(mean_{L,F} |h|^2)``;
2. core: ``[N, L, 2F] -> z [N, D]`` (a summary of the whole history);
3. head: ``Linear(D, P * 2F)`` produces a *correction* for all ``P`` future steps at once (no
   autoregressive rollout: one pass, no error feedback; the horizon is fixed by ``dims.horizon``);
4. output: ``h_future = h_last + r * correction`` (residual on the last history sample, in the
   original scale).

The head is initialised to zero, so an untrained model *is* the outdated-CSI predictor
(``linksim.blocks.get("outdated")``), exactly (bit for bit; ``residual=False`` turns this off).
Training can thus only move away from outdated CSI where that lowers the loss, which makes
"better than outdated CSI at every speed" attainable.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims

__all__ = ["SeriesPredictor", "RNNPredictor", "LSTMPredictor", "GRUPredictor",
           "TransformerPredictor"]


def _as_real(x: torch.Tensor) -> torch.Tensor:
    """``[N, T, F]`` complex -> ``[N, T, 2F]`` float32 (real parts, then imaginary parts)."""
    x = x.to(torch.complex64)
    return torch.cat([x.real, x.imag], -1)


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """``[N, T, 2F]`` float32 -> ``[N, T, F]`` complex64."""
    f = x.shape[-1] // 2
    return torch.complex(x[..., :f].contiguous(), x[..., f:].contiguous())


class SeriesPredictor(AgentModel):
    r"""Base of the learned per-antenna predictors (see the module docstring for the mechanism).

    Subclasses build ``self.core`` mapping ``x [N, L, 2F]`` float32 (normalised history) to
    ``z [N, D]`` and call :meth:`_build_head` with ``D``.

    Input / output (predictor protocol)
    -----------------------------------
    forward: ``h_hist [b, L, ..., F]`` complex (e.g. ``[b, L, K, M, F]``) -> ``[b, P, ..., F]``
    complex64. Every index of the middle dims is an independent series.

    predict_series: ``hist [N, L, F]`` complex -> ``[N, P, F]`` complex64.

    Training loss (:meth:`training_loss`, batch keys ``hist [B, L, F]``, ``future [B, P, F]``):
    the mean squared error in the history-normalised domain,

    .. math:: \mathcal L = \frac{1}{B P F} \sum_{b,p,f} |\hat h_{b,p,f} - h_{b,p,f}|^2 / r_b^2 ,

    with ``r_b`` the RMS of sample b's (noisy) history. Since ``r_b^2`` estimates the series'
    power, this is approximately the linear NMSE (per-sample normalised); its value at
    initialisation is the normalised MSE of outdated CSI.
    """

    def __init__(self, dims: Dims, residual: bool = True, loss: str = "mse"):
        super().__init__()
        if loss not in ("mse", "log_nmse"):
            raise LinksimError(f"{self.arch}: loss must be 'mse' or 'log_nmse', got {loss!r}")
        self.loss = loss
        self.num_subcarriers = int(dims.num_subcarriers)
        self.history = int(dims.history)
        self.horizon = int(dims.horizon)
        self.residual = bool(residual)
        if min(self.num_subcarriers, self.history, self.horizon) < 1:
            raise LinksimError(f"{self.arch}: num_subcarriers, history and horizon must be >= 1")
        self.in_dim = 2 * self.num_subcarriers

    def _build_head(self, d: int) -> None:
        self.head = nn.Linear(d, self.horizon * self.in_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sequence core: ``[N, L, 2F]`` -> ``[N, D]``."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------------- parts
    def _check(self, hist: torch.Tensor) -> None:
        if hist.dim() != 3 or hist.shape[-1] != self.num_subcarriers:
            raise LinksimError(f"{self.arch}: expected series [N, L, F={self.num_subcarriers}], "
                               f"got {tuple(hist.shape)}")
        if self.fixed_history and hist.shape[1] != self.history:
            raise LinksimError(f"{self.arch}: built for L={self.history} history samples, "
                               f"got {hist.shape[1]}")

    fixed_history = False   # the transformer's positional embedding fixes L

    def _normalised(self, hist: torch.Tensor):
        """``hist [N,L,F]`` -> (``x [N,L,2F]`` real in the original scale, ``rms [N,1,1]``)."""
        x = _as_real(hist.to(self.head.weight.device))
        rms = torch.sqrt(torch.mean(x * x, (1, 2), keepdim=True) * 2.0)   # mean |h|^2 over L, F
        return x, rms.clamp_min(1e-30)

    def _correction(self, xn: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(xn)).view(xn.shape[0], self.horizon, self.in_dim)

    def predict_series(self, hist: torch.Tensor) -> torch.Tensor:
        """``hist [N, L, F]`` complex -> ``[N, P, F]`` complex64."""
        self._check(hist)
        x, rms = self._normalised(hist)
        corr = self._correction(x / rms) * rms
        y = x[:, -1:] + corr if self.residual else corr
        return _as_complex(y)

    def forward(self, h_hist: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(h_hist) or h_hist.dim() < 3:
            raise LinksimError(f"{self.arch}: expected h_hist [b, L, ..., F]")
        b, n_t, f = h_hist.shape[0], h_hist.shape[1], h_hist.shape[-1]
        mid = h_hist.shape[2:-1]
        s = h_hist.reshape(b, n_t, -1, f).transpose(1, 2).reshape(-1, n_t, f)   # [b*S, L, F]
        y = self.predict_series(s)                                            # [b*S, P, F]
        y = y.reshape(b, -1, self.horizon, f).transpose(1, 2)
        return y.reshape(b, self.horizon, *mid, f)

    # ---------------------------------------------------------------------------------- training
    def training_loss(self, batch: dict) -> torch.Tensor:
        """History-normalised MSE of the ``P`` predicted steps (see the class docstring), or with
        ``loss = "log_nmse"`` the mean over samples of ln(NMSE_i): every sample counts alike in dB,
        so slow users (small errors) are not drowned by fast ones as they are under a plain MSE."""
        hist, fut = batch["hist"], batch["future"]
        self._check(hist)
        if fut.shape != (hist.shape[0], self.horizon, self.num_subcarriers):
            raise LinksimError(f"{self.arch}: expected future [B, P={self.horizon}, F], "
                               f"got {tuple(fut.shape)}")
        x, rms = self._normalised(hist)
        xn = x / rms
        corr = self._correction(xn)
        pred = xn[:, -1:] + corr if self.residual else corr
        tgt = _as_real(fut.to(x.device)) / rms
        if self.loss == "log_nmse":
            err = (pred - tgt).square().sum(dim=(1, 2)) / tgt.square().sum(dim=(1, 2)).clamp_min(1e-12)
            return torch.log(err + 1e-6).mean()
        return torch.sum((pred - tgt) ** 2) / (tgt.numel() // 2)


class _RecurrentPredictor(SeriesPredictor):
    """Shared recurrent core: ``Linear(2F, hidden)`` -> ``num_layers`` recurrent layers over the L
    history steps -> the last layer's output at the last step."""

    cell = nn.RNN

    def __init__(self, dims: Dims, hidden: int = 128, num_layers: int = 4, dropout: float = 0.0,
                 residual: bool = True, loss: str = "mse"):
        super().__init__(dims, residual, loss)
        if int(hidden) < 1 or int(num_layers) < 1:
            raise LinksimError(f"{self.arch}: hidden and num_layers must be >= 1")
        self.inp = nn.Linear(self.in_dim, int(hidden))
        self.rnn = self.cell(int(hidden), int(hidden), num_layers=int(num_layers),
                             batch_first=True, dropout=float(dropout) if num_layers > 1 else 0.0)
        self._build_head(int(hidden))

    def encode(self, x):
        out, _ = self.rnn(self.inp(x))
        return out[:, -1]


@register_arch("rnn", tasks=("prediction",))
class RNNPredictor(_RecurrentPredictor):
    """Per-antenna predictor with an Elman RNN core (tanh), see :class:`SeriesPredictor`.

    Hparams: ``hidden=128``, ``num_layers=4``, ``dropout=0.0``, ``residual=True``.
    """

    cell = nn.RNN


@register_arch("lstm", tasks=("prediction",))
class LSTMPredictor(_RecurrentPredictor):
    """Per-antenna predictor with an LSTM core, see :class:`SeriesPredictor`.

    Hparams: ``hidden=128``, ``num_layers=4``, ``dropout=0.0``, ``residual=True``.
    """

    cell = nn.LSTM


@register_arch("gru", tasks=("prediction",))
class GRUPredictor(_RecurrentPredictor):
    """Per-antenna predictor with a GRU core, see :class:`SeriesPredictor`.

    Hparams: ``hidden=128``, ``num_layers=4``, ``dropout=0.0``, ``residual=True``.
    """

    cell = nn.GRU


@register_arch("transformer", tasks=("prediction",))
class TransformerPredictor(SeriesPredictor):
    """Parallel Transformer predictor (after Jiang et al. 2022), see :class:`SeriesPredictor`.

    Core: ``Linear(2F, d_model)`` token embedding of each history step plus a learned positional
    embedding over the L steps, a ``torch.nn.TransformerEncoder`` (pre-norm, GELU, batch-first,
    ``num_layers`` layers, ``nhead`` heads, feed-forward ``dim_feedforward``), a final LayerNorm,
    then all L output tokens flattened (``D = L * d_model``) into the shared head, which emits the P
    future steps in parallel (no decoder, no autoregressive rollout). L is fixed to
    ``dims.history``.

    Hparams: ``d_model=64``, ``nhead=4``, ``num_layers=3``, ``dim_feedforward=256``,
    ``dropout=0.0``, ``residual=True``.
    """

    fixed_history = True

    def __init__(self, dims: Dims, d_model: int = 64, nhead: int = 4, num_layers: int = 3,
                 dim_feedforward: int = 256, dropout: float = 0.0, residual: bool = True,
                 loss: str = "mse"):
        super().__init__(dims, residual, loss)
        d_model, nhead = int(d_model), int(nhead)
        if d_model < 1 or nhead < 1 or d_model % nhead:
            raise LinksimError(f"transformer: d_model ({d_model}) must be a positive multiple "
                               f"of nhead ({nhead})")
        self.embed = nn.Linear(self.in_dim, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(self.history, d_model))
        layer = nn.TransformerEncoderLayer(d_model, nhead, int(dim_feedforward), float(dropout),
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, int(num_layers), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self._build_head(self.history * d_model)

    def encode(self, x):
        z = self.encoder(self.embed(x) + self.pos)
        return self.norm(z).flatten(1)
