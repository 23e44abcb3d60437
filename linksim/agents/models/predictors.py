"""Learned channel predictors (task ``prediction``): per-antenna parallel prediction (as in
LLM4CP) with RNN/LSTM/GRU or Transformer sequence cores.

One *series* is one BS antenna's channel (towards one user) over time; each time step is the
vector of its ``F`` subcarriers, fed to the network as ``2F`` reals (real parts, then imaginary
parts: Sionna's :func:`~sionna.phy.mimo.utils.complex2real_vector`). All four architectures share
:class:`SeriesPredictor`; only the sequence core differs:

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


class SeriesPredictor(AgentModel):
    r"""Base of the per-antenna predictors: normalise, encode the history, predict a residual.

    A series :math:`\mathbf{h}_1, \dots, \mathbf{h}_L \in \mathbb{C}^F` (one BS antenna towards one
    user, ``F`` subcarriers per time step) is predicted :math:`P` steps ahead as

    .. math::

        r = \sqrt{\frac{1}{LF}\sum_{l,f}|h_{l,f}|^2}, \qquad
        \mathbf{z} = \operatorname{core}\left(\mathbf{x}_1 / r, \dots, \mathbf{x}_L / r\right), \qquad
        \mathbf{x}_l = \begin{pmatrix}\Re\mathbf{h}_l \\ \Im\mathbf{h}_l\end{pmatrix}

    .. math::

        \begin{pmatrix}\Re\hat{\mathbf{h}}_{L+p} \\ \Im\hat{\mathbf{h}}_{L+p}\end{pmatrix}
        = \mathbf{x}_L + r\,\mathbf{c}_p, \qquad
        [\mathbf{c}_1; \dots; \mathbf{c}_P] = \mathbf{W}\mathbf{z} + \mathbf{b}, \qquad p = 1, \dots, P

    (without :math:`\mathbf{x}_L` for ``residual=False``). The head :math:`(\mathbf{W},
    \mathbf{b})` is initialised to zero, so an untrained model is exactly outdated CSI.
    Subclasses build the core as :meth:`encode` (``x [N, L, 2F]`` float32, normalised history
    -> ``z [N, D]``) and call :meth:`_build_head` with ``D``.

    Training loss (:meth:`training_loss`, batch keys ``hist [B, L, F]``, ``future [B, P, F]``):
    the mean squared error in the history-normalised domain,

    .. math:: \mathcal L = \frac{1}{B P F} \sum_{b,p,f} |\hat h_{b,p,f} - h_{b,p,f}|^2 / r_b^2 ,

    with :math:`r_b` the RMS of sample b's (noisy) history. Since :math:`r_b^2` estimates the
    series' power, this is approximately the linear NMSE (per-sample normalised); its value at
    initialisation is the normalised MSE of outdated CSI. ``loss="log_nmse"``: the mean over
    samples of :math:`\ln(\mathrm{NMSE}_b + 10^{-6})` instead.

    ``series = "user"`` makes a series one user's whole ``M x F`` snapshot per time step (``2MF``
    reals, what ``ar`` fits jointly) instead of one antenna's ``F`` subcarriers; the model is then
    built for the scenario's M, and trains on all antennas of a user per sample.

    :param dims: scenario sizes (uses ``num_subcarriers`` F, ``history`` L, ``horizon`` P; M for
        ``series = "user"``)
    :param residual: add the prediction to the last history sample (default True)
    :param loss: ``"mse"`` (default) or ``"log_nmse"``
    :param series: ``"antenna"`` (default: LLM4CP's per-antenna series) or ``"user"``

    :input h_hist: [b, L, ..., F], `torch.complex`. Channel history, e.g. ``[b, L, K, M, F]``;
        every index of the middle dimensions is an independent series.

    :output h_future: [b, P, ..., F], `torch.complex64`. The predicted next ``P`` samples.
    """

    def __init__(self, dims: Dims, residual: bool = True, loss: str = "mse", series: str = "antenna"):
        super().__init__()
        if loss not in ("mse", "log_nmse"):
            raise LinksimError(f"{self.arch}: loss must be 'mse' or 'log_nmse', got {loss!r}")
        if series not in ("antenna", "user"):
            raise LinksimError(f"{self.arch}: series must be 'antenna' or 'user', got {series!r}")
        self.loss, self.series = loss, series
        self.layouts = {"prediction": series}
        self.num_antennas = int(dims.num_bs_antennas) if series == "user" else 1
        self.num_subcarriers = int(dims.num_subcarriers) * self.num_antennas    # entries per step
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
        from sionna.phy.mimo.utils import complex2real_vector

        x = complex2real_vector(hist.to(self.head.weight.device).to(torch.complex64))
        rms = torch.sqrt(torch.mean(x * x, (1, 2), keepdim=True) * 2.0)   # mean |h|^2 over L, F
        return x, rms.clamp_min(1e-30)

    def _correction(self, xn: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(xn)).view(xn.shape[0], self.horizon, self.in_dim)

    def predict_series(self, hist: torch.Tensor) -> torch.Tensor:
        """``hist [N, L, F]`` complex -> ``[N, P, F]`` complex64."""
        from sionna.phy.mimo.utils import real2complex_vector

        self._check(hist)
        x, rms = self._normalised(hist)
        corr = self._correction(x / rms) * rms
        y = x[:, -1:] + corr if self.residual else corr
        return real2complex_vector(y)

    def check_dims(self, task, wanted):
        out = super().check_dims(task, wanted)
        if self.series == "user" and self.dims.num_bs_antennas != wanted.num_bs_antennas:
            out.append(f"num_bs_antennas={self.dims.num_bs_antennas} (scenario: {wanted.num_bs_antennas})")
        return out

    def forward(self, h_hist: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(h_hist) or h_hist.dim() < 3:
            raise LinksimError(f"{self.arch}: expected h_hist [b, L, ..., F]")
        if self.series == "user":                # [b, L, K, M, F]: a user's M x F entries per step
            if h_hist.dim() != 5:
                raise LinksimError(f"{self.arch}: series = 'user' expects h_hist [b, L, K, M, F], "
                                   f"got {tuple(h_hist.shape)}")
            b, n_t, k, m, f = h_hist.shape
            y = self.predict_series(h_hist.transpose(1, 2).reshape(b * k, n_t, m * f))   # [bK, P, MF]
            return y.reshape(b, k, self.horizon, m, f).transpose(1, 2)
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
        from sionna.phy.mimo.utils import complex2real_vector

        hist, fut = batch["hist"], batch["future"]
        if self.series == "user":                # [B, L, M, F] -> [B, L, MF]
            hist, fut = hist.flatten(2), fut.flatten(2)
        self._check(hist)
        if fut.shape != (hist.shape[0], self.horizon, self.num_subcarriers):
            raise LinksimError(f"{self.arch}: expected future [B, P={self.horizon}, F], "
                               f"got {tuple(fut.shape)}")
        x, rms = self._normalised(hist)
        xn = x / rms
        corr = self._correction(xn)
        pred = xn[:, -1:] + corr if self.residual else corr
        tgt = complex2real_vector(fut.to(x.device).to(torch.complex64)) / rms
        if self.loss == "log_nmse":
            err = (pred - tgt).square().sum(dim=(1, 2)) / tgt.square().sum(dim=(1, 2)).clamp_min(1e-12)
            return torch.log(err + 1e-6).mean()
        return torch.sum((pred - tgt) ** 2) / (tgt.numel() // 2)


class _RecurrentPredictor(SeriesPredictor):
    """Shared recurrent core: ``Linear(2F, hidden)`` -> ``num_layers`` recurrent layers over the L
    history steps -> the last layer's output at the last step."""

    cell = nn.RNN

    def __init__(self, dims: Dims, hidden: int = 128, num_layers: int = 4, dropout: float = 0.0,
                 residual: bool = True, loss: str = "mse", series: str = "antenna"):
        super().__init__(dims, residual, loss, series)
        if int(hidden) < 1 or int(num_layers) < 1:
            raise LinksimError(f"{self.arch}: hidden and num_layers must be >= 1")
        self.inp = nn.Linear(self.in_dim, int(hidden))
        self.rnn = self.cell(int(hidden), int(hidden), num_layers=int(num_layers),
                             batch_first=True, dropout=float(dropout) if num_layers > 1 else 0.0)
        self._build_head(int(hidden))

    def encode(self, x):
        out, _ = self.rnn(self.inp(x))
        return out[:, -1]


_RECURRENT_DOC = r"""

    The core of :class:`SeriesPredictor` embeds each normalised step and runs :math:`N`
    (``num_layers``) stacked {name} layers of width :math:`D` (``hidden``) over the :math:`L`
    history steps; :math:`\mathbf{{z}}` is the top layer's output after the last step:

    .. math::

        \mathbf{{e}}_l = \mathbf{{W}}_{{\text{{in}}}}\,\mathbf{{x}}_l / r + \mathbf{{b}}_{{\text{{in}}}},
        \qquad \mathbf{{z}} = \operatorname{{{name}}}_{{N}}(\mathbf{{e}}_1, \dots, \mathbf{{e}}_L)_L
        \in \mathbb{{R}}^{{D}},

    {cell}.
    The zero-initialised head then predicts the :math:`P` future steps in parallel as a residual on
    the last history sample (see :class:`SeriesPredictor`). Any history length :math:`L` works.

    :param dims: scenario sizes (uses ``num_subcarriers`` F, ``history`` L, ``horizon`` P)
    :param hidden: width :math:`D` of the embedding and of the recurrent state (default 128)
    :param num_layers: number of stacked recurrent layers :math:`N` (default 4)
    :param dropout: dropout between recurrent layers (default 0.0; ignored for one layer)
    :param residual: add the prediction to the last history sample (default True)
    :param loss: ``"mse"`` (default) or ``"log_nmse"``, see :class:`SeriesPredictor`

    :input h_hist: [b, L, ..., F], `torch.complex`. Channel history, e.g. ``[b, L, K, M, F]``;
        every index of the middle dimensions is an independent series.

    :output h_future: [b, P, ..., F], `torch.complex64`. The predicted next ``P`` samples.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents import Dims, build_model

        dims = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=48, history=16, horizon=4,
                    bits_per_symbol=4, symbols_per_sample=6)
        model = build_model("{arch}", dims, {{"hidden": 64}})   # untrained: outdated CSI
        h_hist = torch.randn(2, 16, 4, 16, 48, dtype=torch.complex64)
        h_future = model(h_hist)
        # h_future.shape = torch.Size([2, 4, 4, 16, 48]); untrained, every step is h_hist[:, -1]
    """


@register_arch("rnn", tasks=("prediction",))
class RNNPredictor(_RecurrentPredictor):
    __doc__ = "Per-antenna channel predictor with an Elman RNN core (tanh)." + _RECURRENT_DOC.format(
        name="RNN", arch="rnn",
        cell="each layer computes\n    :math:`\\mathbf{u}_l = \\tanh(\\mathbf{W}\\mathbf{e}_l + "
             "\\mathbf{U}\\mathbf{u}_{l-1} + \\mathbf{b})`\n    (the next layer's input is "
             "this layer's :math:`\\mathbf{u}_l`)")

    cell = nn.RNN


@register_arch("lstm", tasks=("prediction",))
class LSTMPredictor(_RecurrentPredictor):
    __doc__ = "Per-antenna channel predictor with an LSTM core." + _RECURRENT_DOC.format(
        name="LSTM", arch="lstm",
        cell="each layer is a ``torch.nn.LSTM`` layer (input, forget and output gates, cell "
             "state;\n    the output is its hidden state)")

    cell = nn.LSTM


@register_arch("gru", tasks=("prediction",))
class GRUPredictor(_RecurrentPredictor):
    __doc__ = "Per-antenna channel predictor with a GRU core." + _RECURRENT_DOC.format(
        name="GRU", arch="gru",
        cell="each layer is a ``torch.nn.GRU`` layer (reset and update gates; the output is "
             "its\n    hidden state)")

    cell = nn.GRU


@register_arch("transformer", tasks=("prediction",))
class TransformerPredictor(SeriesPredictor):
    r"""Parallel Transformer channel predictor (after Jiang et al. 2022).

    The core of :class:`SeriesPredictor`: a token embedding of each normalised history step plus a
    learned positional embedding :math:`\mathbf{q}_l` over the :math:`L` steps (token width
    :math:`d` = ``d_model``), a Transformer encoder (``torch.nn.TransformerEncoder``: pre-norm,
    GELU, batch-first, ``num_layers`` layers, ``nhead`` heads, feed-forward width
    ``dim_feedforward``), a final LayerNorm, then all :math:`L` output tokens flattened,

    .. math::

        \mathbf{e}_l = \mathbf{W}_{\text{in}}\,\mathbf{x}_l / r + \mathbf{b}_{\text{in}}
            + \mathbf{q}_l, \qquad
        \mathbf{z} = \operatorname{vec}\left(\operatorname{LayerNorm}\left(
            \operatorname{Encoder}(\mathbf{e}_1, \dots, \mathbf{e}_L)\right)\right)
            \in \mathbb{R}^{L d},

    into the shared zero-initialised head, which emits the :math:`P` future steps in parallel (no
    decoder, no autoregressive rollout; see :class:`SeriesPredictor`). :math:`L` is fixed to
    ``dims.history`` (the positional embedding, initialised :math:`\mathcal{N}(0, 0.02^2)`).

    :param dims: scenario sizes (uses ``num_subcarriers`` F, ``history`` L, ``horizon`` P)
    :param d_model: token width :math:`d` (default 64; a multiple of ``nhead``)
    :param nhead: attention heads (default 4)
    :param num_layers: encoder layers (default 3)
    :param dim_feedforward: feed-forward width of each encoder layer (default 256)
    :param dropout: dropout inside the encoder layers (default 0.0)
    :param residual: add the prediction to the last history sample (default True)
    :param loss: ``"mse"`` (default) or ``"log_nmse"``, see :class:`SeriesPredictor`

    :input h_hist: [b, L, ..., F], `torch.complex`. Channel history with ``L = dims.history``,
        e.g. ``[b, L, K, M, F]``; every index of the middle dimensions is an independent series.

    :output h_future: [b, P, ..., F], `torch.complex64`. The predicted next ``P`` samples.

    .. rubric:: Examples

    .. code-block:: python

        import linksim

        sc = linksim.load_scenario("scenarios/quick.toml")      # run from the repository root
        predictor = linksim.blocks.get("agent:agents/transformer", kind="predictor", scenario=sc)
        h = linksim.ChannelSource(sc, seed=1).sample(2)         # [2, L + P, K, M, F]
        h_future = predictor(h[:, :16])
        # h_future.shape = torch.Size([2, 4, 4, 16, 48]), to compare with h[:, 16:]
    """

    fixed_history = True

    def __init__(self, dims: Dims, d_model: int = 64, nhead: int = 4, num_layers: int = 3,
                 dim_feedforward: int = 256, dropout: float = 0.0, residual: bool = True,
                 loss: str = "mse", series: str = "antenna"):
        super().__init__(dims, residual, loss, series)
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
