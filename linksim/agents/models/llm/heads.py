r"""Task encoders and decoders of the multi-task LLM agent (:mod:`.model`).

Each task has a *head*, registered for it (:func:`register_head`): ``encode`` turns the block inputs
into data tokens of the LLM's width (placed after the task's instruction), ``decode`` turns the
LLM's hidden states at those positions into the block output; ``run(agent, *inputs)`` is the task's
block protocol through the agent's LLM, ``loss(agent, batch)`` its training loss, and
``must_match`` the sizes an agent must share with a scenario to serve the task. Every decoder's last layer starts at zero, so an untrained agent is a known
classical block (outdated CSI, unbiased LMMSE, RZF with equal powers): training can only move away
from it where the loss says so.

Where linksim departs from Zheng & Dai (and why):

- CP sees **all antennas and subcarriers of a user per time step** (one token per past sample of
  the whole ``[M x F]`` snapshot) instead of one antenna at a time: the joint view is what makes
  ``ar`` strong, and it costs M times fewer LLM tokens. The decoder outputs **prediction filter
  taps** (complex, ``P x L``) applied to the user's own noisy history, instead of regressing the
  ``P x M x F`` future directly: a shared linear filter over the history is exact for a few paths
  with common Doppler across antennas and subcarriers, so the LLM's job is to read the Doppler
  content of the history, and the decoder stays tiny (the agent stays small). The taps are a
  **correction of the least-squares AR filter** of the same history (``base = "ar"``, the
  :class:`~linksim.blocks.predictors.ARPredictor` recursion written as taps): the untrained agent is
  ``ar``, the strongest classical predictor here, and the LLM only has to learn what AR misses
  (``base = "outdated"`` starts from outdated CSI instead, as a plain learned predictor would).
- DET starts from the **unbiased LMMSE estimate** (computed exactly) and the LLM predicts a
  correction; the channel enters as Gram-matrix rows, which with the LMMSE estimates form a
  sufficient statistic of ``(y, H)``.
- PRE predicts the ``2K`` parameters of the optimal beamforming structure, as the CNN does, which
  keeps the power budget exact by construction and lets one model serve any K.
"""
from __future__ import annotations

import torch
from sionna.phy.mimo.utils import complex2real_vector
from torch import nn

from ....blocks.precoders import per_sample, structured_beamformer
from ....blocks.predictors.classical import ARPredictor, extrapolate
from ....errors import LinksimError
from .._precoding import p_lambda_from_logits, structure_loss

#: task -> its head class (:func:`register_head`), in registration order
HEADS: dict[str, type] = {}


def register_head(task: str):
    """Class decorator: the LLM agent's head for ``task`` (sets ``cls.task``)."""
    def deco(cls):
        if task in HEADS:
            raise ValueError(f"llm head for task {task!r} registered twice")
        cls.task = task
        HEADS[task] = cls
        return cls
    return deco


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class SEResBlock(nn.Module):
    r"""Residual MLP block with squeeze-and-excitation over a token sequence ("CSI attention").

    .. math::
        \mathbf{u}_l = \mathbf{x}_l + \mathbf{W}_2\,\mathrm{GELU}(\mathbf{W}_1
            \operatorname{LN}(\mathbf{x}_l)), \qquad
        \mathbf{s} = \sigma\big(\mathbf{V}_2\,\mathrm{ReLU}(\mathbf{V}_1 \tfrac{1}{L}
            \textstyle\sum_l \mathbf{u}_l)\big), \qquad \mathbf{y}_l = \mathbf{s} \odot \mathbf{u}_l

    :param d: feature width
    :param reduction: squeeze ratio of the excitation MLP (default 4)

    :input x: [N, L, d], float32. :output y: [N, L, d], float32.
    """

    def __init__(self, d: int, reduction: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.mlp = _mlp(d, 2 * d, d)
        self.se = nn.Sequential(nn.Linear(d, max(1, d // reduction)), nn.ReLU(),
                                nn.Linear(max(1, d // reduction), d), nn.Sigmoid())

    def forward(self, x):
        u = x + self.mlp(self.norm(x))
        return u * self.se(u.mean(1, keepdim=True))


@register_head("prediction")
class PredictionHead(nn.Module):
    r"""CP: one token per past sample of a user's whole ``[M x F]`` channel; filter taps out.

    A user's history :math:`\mathbf{h}_1, \dots, \mathbf{h}_L \in \mathbb{C}^{MF}` is normalised
    by its RMS :math:`r`, embedded per time step (``Linear``, ``blocks`` :class:`SEResBlock`,
    ``Linear`` to the LLM width). The decoder maps the LLM's :math:`L` hidden states to complex taps
    :math:`c_{p,l}` and predicts

    .. math::
        \hat{\mathbf{h}}_{L+p} = \sum_{l=1}^{L} (b_{p,l} + c_{p,l})\,\mathbf{h}_l,
        \qquad p = 1, \dots, P,

    with :math:`c = 0` at initialisation. The base taps :math:`b` are ``ar``'s recursive
    least-squares prediction of this history written as a ``P x L`` filter (``base = "ar"``), or
    :math:`b_{p,l} = \delta_{lL}` (``base = "outdated"``).

    :param dims: uses ``num_bs_antennas`` M, ``num_subcarriers`` F, ``history`` L, ``horizon`` P
    :param width: the LLM's hidden size
    :param hidden: encoder width (default 256)
    :param blocks: number of :class:`SEResBlock` (default 2)
    :param base: ``"ar"`` (default) | ``"outdated"``: what the untrained agent predicts
    """

    must_match = ("num_bs_antennas", "num_subcarriers", "history", "horizon")

    def __init__(self, dims, width: int, hidden: int = 256, blocks: int = 2, base: str = "ar"):
        super().__init__()
        if base not in ("ar", "outdated"):
            raise ValueError(f"prediction base must be 'ar' or 'outdated', got {base!r}")
        self.base = base
        self.m, self.f = int(dims.num_bs_antennas), int(dims.num_subcarriers)
        self.history, self.horizon = int(dims.history), int(dims.horizon)
        self.inp = nn.Linear(2 * self.m * self.f, hidden)
        self.blocks = nn.Sequential(*(SEResBlock(hidden) for _ in range(blocks)))
        self.to_llm = nn.Linear(hidden, width)
        self.from_llm = nn.Linear(width, 16)
        self.taps = nn.Sequential(nn.Linear(16 * self.history, hidden), nn.GELU(),
                                  _zero(nn.Linear(hidden, 2 * self.horizon * self.history)))

    def series(self, h_hist: torch.Tensor) -> torch.Tensor:
        """``[b, L, K, M, F]`` -> per-user series ``[b*K, L, M*F]`` complex64 (checked)."""
        if h_hist.dim() != 5 or h_hist.shape[1] != self.history or h_hist.shape[3:] != (self.m, self.f):
            raise LinksimError(f"llm prediction: expected h_hist [b, L={self.history}, K, M={self.m}, "
                               f"F={self.f}], got {tuple(h_hist.shape)}")
        b, n_t, k = h_hist.shape[:3]
        return h_hist.to(torch.complex64).transpose(1, 2).reshape(b * k, n_t, self.m * self.f)

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        """Per-user series ``[N, L, MF]`` -> tokens ``[N, L, width]``."""
        x = complex2real_vector(s)
        rms = torch.sqrt(x.square().mean((1, 2), keepdim=True) * 2.0).clamp_min(1e-30)
        return self.to_llm(self.blocks(self.inp(x / rms)))

    def decode(self, hidden: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[N, L, width]`` + series ``[N, L, MF]`` -> ``[N, P, MF]`` complex64."""
        n = hidden.shape[0]
        c = self.taps(self.from_llm(hidden).flatten(1)).view(n, self.horizon, self.history, 2)
        c = c.float()                                   # bf16/fp16 under autocast: complex needs float32
        c = torch.complex(c[..., 0], c[..., 1])
        return (self.base_taps(s) + c) @ s

    @torch.no_grad()
    def base_taps(self, s: torch.Tensor) -> torch.Tensor:
        r"""The base filter :math:`b`: ``[N, L, MF]`` -> ``[N, P, L]`` complex64.

        For ``"ar"``, the AR coefficients :math:`a_1..a_p` of each series (fitted by
        :meth:`ARPredictor.coefficients` on the whole user) run the recursion
        :math:`\hat{h}_{t} = \sum_i a_i \hat{h}_{t-i}` on unit tap vectors, so that
        ``b @ s`` equals ``ar``'s prediction.
        """
        n, n_t = s.shape[0], self.history
        eye = torch.eye(n_t, dtype=torch.complex128, device=s.device).expand(n, n_t, n_t)
        if self.base == "outdated":
            return eye[:, -1:].expand(n, self.horizon, n_t).to(torch.complex64)
        a = ARPredictor(horizon=self.horizon).coefficients(s)                    # [N, p] c128
        return extrapolate(eye, a, self.horizon).to(torch.complex64)   # the recursion on unit taps

    def unflatten(self, y: torch.Tensor, b: int) -> torch.Tensor:
        """``[b*K, P, M*F]`` -> ``[b, P, K, M, F]``."""
        return y.view(b, -1, self.horizon, self.m, self.f).transpose(1, 2)

    def predict_series(self, agent, s: torch.Tensor) -> torch.Tensor:
        """Per-user series ``[N, L, MF]`` -> predictions ``[N, P, MF]`` through ``agent``'s LLM."""
        return self.decode(agent.run_llm(self.task, self.encode(s)), s)

    def run(self, agent, h_hist):
        """The predictor protocol: ``h_hist [b, L, K, M, F]`` -> ``[b, P, K, M, F]``."""
        return self.unflatten(self.predict_series(agent, self.series(h_hist)), h_hist.shape[0])

    def loss(self, agent, batch: dict) -> torch.Tensor:
        """Per-user NMSE (``agent.cp_loss = "nmse"``, mean over users) or mean ln NMSE, on
        ``hist [B,L,M,F]``, ``future [B,P,M,F]`` (one user per sample)."""
        hist, fut = batch["hist"], batch["future"]
        pred = self.predict_series(agent, self.series(hist.unsqueeze(2)).to(hist.device))
        tgt = fut.reshape(pred.shape).to(pred.device, torch.complex64)
        nmse = (pred - tgt).abs().square().sum(-1).sum(-1) / tgt.abs().square().sum((1, 2)).clamp_min(1e-12)
        return torch.log(nmse + 1e-6).mean() if agent.cp_loss == "log_nmse" else nmse.mean()


@register_head("detection")
class DetectionHead(nn.Module):
    r"""DET: K channel tokens and T received-signal tokens; a correction of unbiased LMMSE out.

    With :math:`s^2 = \operatorname{tr}(\mathbf{H}^{\mathsf{H}}\mathbf{H})/K`,
    :math:`\mathbf{G} = \mathbf{H}^{\mathsf{H}}\mathbf{H}/s^2`, :math:`\nu = \sigma^2/s^2`,
    :math:`\mathbf{A} = (\mathbf{G} + \nu\mathbf{I})^{-1}`, :math:`e_k = \nu A_{kk}`:

    .. math::
        \tilde{\mathbf{x}}_t = \operatorname{diag}(1 - e_k)^{-1}\,\mathbf{A}\,
            \mathbf{H}^{\mathsf{H}}\mathbf{y}_t / s^2 \quad \text{(unbiased LMMSE)}, \qquad
        \hat{\mathbf{x}}_t = \tilde{\mathbf{x}}_t + \operatorname{dec}(\text{hidden}_t).

    Channel token k: row k of :math:`\mathbf{G}` (2K reals), :math:`e_k`, :math:`\log_{10}\nu`.
    Signal token t: :math:`\tilde{\mathbf{x}}_t` (2K reals). Each through a 2-layer MLP to the LLM
    width, plus a learned type embedding. The decoder reads the T signal tokens only.

    :param dims: uses ``num_bs_antennas`` M, ``num_users`` K
    :param width: the LLM's hidden size
    :param hidden: MLP width (default 128)
    """

    must_match = ("num_bs_antennas", "num_users", "bits_per_symbol")

    def __init__(self, dims, width: int, hidden: int = 128):
        super().__init__()
        self.m, self.k = int(dims.num_bs_antennas), int(dims.num_users)
        self.chan = _mlp(2 * self.k + 2, hidden, width)
        self.sig = _mlp(2 * self.k, hidden, width)
        self.kind = nn.Parameter(torch.zeros(2, width))
        self.dec = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), _zero(nn.Linear(hidden, 2 * self.k)))

    def lmmse(self, y, h, noise_var):
        """``(x_tilde [b,T,K] complex64, tokens-inputs)``: unbiased LMMSE and the token features."""
        from .._detection import check_inputs

        check_inputs("llm", y, h, self.m, self.k)
        y, h = y.to(torch.complex64), h.to(torch.complex64)
        b = h.shape[0]
        s2 = (h.abs().square().sum((1, 2)) / self.k).clamp_min(1e-12)                # [b]
        nu = (per_sample(noise_var, b, h.device).to(torch.float32) / s2).clamp_min(1e-9)
        g = h.mH @ h / s2[:, None, None].to(h.dtype)                                  # [b,K,K]
        eye = torch.eye(self.k, device=h.device, dtype=h.dtype)
        a = torch.linalg.inv(g + nu[:, None, None].to(h.dtype) * eye)
        e = (nu[:, None] * a.diagonal(dim1=1, dim2=2).real).clamp(max=0.999)          # [b,K]
        x = (a @ (h.mH @ y)) / s2[:, None, None].to(h.dtype) / (1 - e)[..., None].to(h.dtype)
        chan = torch.cat([complex2real_vector(g), e[..., None],
                          torch.log10(nu)[:, None, None].expand(b, self.k, 1)], -1)
        return x.transpose(1, 2), chan

    def encode(self, x_tilde, chan) -> torch.Tensor:
        """``[b, K + T, width]``: channel tokens, then signal tokens."""
        return torch.cat([self.chan(chan) + self.kind[0], self.sig(complex2real_vector(x_tilde)) + self.kind[1]], 1)

    def decode(self, hidden, x_tilde) -> torch.Tensor:
        """Hidden states of the signal tokens ``[b, T, width]`` -> ``x_hat [b, K, T]`` complex64."""
        d = self.dec(hidden)
        d = d.float()                                   # bf16/fp16 under autocast: complex needs float32
        return (x_tilde + torch.complex(d[..., :self.k], d[..., self.k:])).transpose(1, 2)

    def run(self, agent, y, h, noise_var):
        """The detector protocol: ``(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T]``."""
        x_tilde, chan = self.lmmse(y, h, noise_var)
        hidden = agent.run_llm(self.task, self.encode(x_tilde, chan))
        return self.decode(hidden[:, self.k:], x_tilde)

    def loss(self, agent, batch: dict) -> torch.Tensor:
        """Mean ``|x_hat - x|^2``."""
        x_hat = self.run(agent, batch["y"], batch["h"], batch["noise_var"])
        return (x_hat - batch["x"].to(x_hat.device, torch.complex64)).abs().square().mean()


@register_head("precoding")
class PrecodingHead(nn.Module):
    r"""PRE: one token per user from a small transformer over the users; ``(p, lambda)`` out.

    User k's channel normalised by the per-sample RMS :math:`\bar h` and the effective SNR
    :math:`\bar s = (10\log_{10}(P\bar h^2/\sigma^2) - 10)/10` form ``2M + 1`` features; a
    ``Linear`` and a permutation-equivariant ``TransformerEncoder`` over the K users (no positions)
    give one token per user, ``Linear`` to the LLM width. The decoder maps each user's hidden
    state to :math:`(a_k, b_k)`:

    .. math::
        \mathbf{p} = P\operatorname{softmax}(\mathbf{a}), \quad
        \boldsymbol\lambda = P\operatorname{softmax}(\mathbf{b}), \quad
        \mathbf{W} = \operatorname{structured\_beamformer}(\mathbf{H}, \mathbf{p},
            \boldsymbol\lambda, \sigma^2, P)

    so the power budget holds exactly and any K works (the training range is enforced by the agent).

    :param dims: uses ``num_bs_antennas`` M
    :param width: the LLM's hidden size
    :param hidden: user-transformer width (default 128)
    :param layers: user-transformer layers (default 2)
    """

    must_match = ("num_bs_antennas",)
    users_range = True                    # K: any in the agent's ``users``

    def __init__(self, dims, width: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.m = int(dims.num_bs_antennas)
        self.inp = nn.Linear(2 * self.m + 1, hidden)
        layer = nn.TransformerEncoderLayer(hidden, 4, 2 * hidden, 0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.users = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.to_llm = nn.Linear(hidden, width)
        self.dec = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), _zero(nn.Linear(hidden, 2)))

    def encode(self, h, p_tx, noise_var):
        """``h [b, K, M]`` -> (tokens ``[b, K, width]``, ``p_tx [b]`` float64)."""
        if h.dim() != 3 or h.shape[2] != self.m:
            raise LinksimError(f"llm precoding: expected h [b, K, M={self.m}], got {tuple(h.shape)}")
        b = h.shape[0]
        h = h.to(torch.complex64)
        ptx = per_sample(p_tx, b, h.device)
        s2 = per_sample(noise_var, b, h.device)
        ms = h.abs().square().double().mean((1, 2)).clamp_min(1e-300)
        snr = (10 * torch.log10((ptx * ms / s2).clamp_min(1e-30)) - 10) / 10
        x = torch.cat([complex2real_vector(h / ms.sqrt().to(torch.float32)[:, None, None]),
                       snr.to(torch.float32)[:, None, None].expand(b, h.shape[1], 1)], -1)
        return self.to_llm(self.users(self.inp(x))), ptx

    def decode(self, hidden, ptx):
        """Hidden states ``[b, K, width]`` -> ``(p, lam)`` ``[b, K]`` float32, each summing to ``p_tx``."""
        z = self.dec(hidden)
        return p_lambda_from_logits(z[..., 0], z[..., 1], ptx)

    @staticmethod
    def beamformer(h, p, lam, noise_var, p_tx):
        return structured_beamformer(h.to(p.device), p, lam, noise_var, p_tx)

    def p_lambda(self, agent, h, p_tx, noise_var):
        """``(p, lam)`` ``[b, K]`` through ``agent``'s LLM (K within the agent's users range)."""
        agent.check_users(h.shape[1])
        tokens, ptx = self.encode(h, p_tx, noise_var)
        return self.decode(agent.run_llm(self.task, tokens, h.shape[1]), ptx)

    def run(self, agent, h, p_tx, noise_var):
        """The precoder protocol: ``(h [b,K,M], p_tx, noise_var) -> w [b,M,K]``."""
        p, lam = self.p_lambda(agent, h, p_tx, noise_var)
        return self.beamformer(h, p, lam, noise_var, p_tx)

    def loss(self, agent, batch: dict) -> torch.Tensor:
        """As the CNN's (:func:`~linksim.agents.models._precoding.structure_loss`)."""
        return structure_loss(lambda *a: self.p_lambda(agent, *a), lambda *a: self.run(agent, *a), batch, "llm")


__all__ = ["HEADS", "SEResBlock", "PredictionHead", "DetectionHead", "PrecodingHead", "register_head"]
