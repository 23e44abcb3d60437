"""OAMP-Net2 (He, Wen, Jin, Li 2020), a trained MIMO detector (task ``detection``).

The detector protocol and the training batch are described in :mod:`._detection`.
"""
from __future__ import annotations

import torch
from torch import nn

from ...blocks.detectors import noise_vector
from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims
from ._detection import batch_tensors, check_inputs, pam_levels, symbol_ce

__all__ = ["OAMPNet"]


@register_arch("oampnet", tasks=("detection",))
class OAMPNet(AgentModel):
    r"""OAMP-Net2 (He, Wen, Jin, Li 2020): OAMP unfolded with 4 trainable scalars per layer.

    Complex model :math:`\mathbf{y} = \mathbf{H}\mathbf{x} + \mathbf{n}`,
    :math:`\mathbf{n}\sim\mathcal{CN}(\mathbf{0}, \sigma^2\mathbf{I}_M)`, starting from
    :math:`\mathbf{x}_0 = \mathbf{0}`. Layer :math:`t = 0, \dots, L-1` computes (all quantities
    per received vector)

    .. math::

        v_t^2 &= \max\left(\frac{\|\mathbf{y} - \mathbf{H}\mathbf{x}_t\|^2 - M\sigma^2}
                 {\operatorname{tr}(\mathbf{H}^{\mathsf{H}}\mathbf{H})},\ \epsilon\right)
                 \quad \text{(prior error variance)} \\
        \hat{\mathbf{W}}_t &= v_t^2\,\mathbf{H}^{\mathsf{H}}
                 \left(v_t^2\,\mathbf{H}\mathbf{H}^{\mathsf{H}} + \sigma^2\mathbf{I}_M\right)^{-1}
                 \quad \text{(LMMSE)} \\
        \mathbf{W}_t &= \frac{K}{\operatorname{tr}(\hat{\mathbf{W}}_t\mathbf{H})}\,\hat{\mathbf{W}}_t
                 \quad \text{(de-correlated)} \\
        \mathbf{r}_t &= \mathbf{x}_t + \gamma_t\,\mathbf{W}_t(\mathbf{y} - \mathbf{H}\mathbf{x}_t) \\
        \mathbf{B}_t &= \mathbf{I}_K - \theta_t\,\mathbf{W}_t\mathbf{H} \\
        \tau_t^2 &= \frac{1}{K}\left(\operatorname{tr}(\mathbf{B}_t\mathbf{B}_t^{\mathsf{H}})\,v_t^2
                 + \theta_t^2\,\sigma^2\operatorname{tr}(\mathbf{W}_t\mathbf{W}_t^{\mathsf{H}})\right)
                 \quad \text{(variance of } \mathbf{r}_t - \mathbf{x}) \\
        \mathbf{x}_{t+1} &= \phi_t\left(\mathbb{E}[\mathbf{x} \mid \mathbf{r}_t; \tau_t^2]
                 - \xi_t\,\mathbf{r}_t\right)

    where :math:`\mathbb{E}[\mathbf{x} \mid \mathbf{r}; \tau^2]` is the posterior mean of a uniform
    QAM symbol observed as
    :math:`\mathbf{r} = \mathbf{x} + \mathcal{CN}(\mathbf{0}, \tau^2\mathbf{I})` (computed per real
    axis: square QAM is a product of two PAMs, each axis seeing noise variance
    :math:`\tau^2 / 2`). The output is :math:`\mathbf{x}_L`. At the initial parameters
    :math:`\gamma = \theta = \phi = 1`, :math:`\xi = 0` this is plain OAMP with the LMMSE linear
    stage and the MMSE denoiser. :math:`\epsilon = 10^{-10}`.

    Implementation: with the eigen-decomposition of the Gram matrix (once per sample, shared by
    the ``T`` slots)

    .. math::

        \mathbf{H}^{\mathsf{H}}\mathbf{H}
            = \mathbf{V}\operatorname{diag}(\boldsymbol{\lambda})\mathbf{V}^{\mathsf{H}}, \quad
        \mathbf{W}_t = c\,\mathbf{V}\operatorname{diag}(\mathbf{f})\mathbf{V}^{\mathsf{H}}
            \mathbf{H}^{\mathsf{H}}, \quad
        f_i = \frac{v_t^2}{v_t^2\lambda_i + \sigma^2}, \quad
        c = \frac{K}{\sum_i \lambda_i f_i}

        \operatorname{tr}(\mathbf{B}_t\mathbf{B}_t^{\mathsf{H}})
            = \sum_i (1 - \theta_t c \lambda_i f_i)^2, \quad
        \operatorname{tr}(\mathbf{W}_t\mathbf{W}_t^{\mathsf{H}}) = c^2 \sum_i \lambda_i f_i^2,

    so no :math:`M\times M` inverse is formed (exact, also for :math:`M < K`).

    Loss: :math:`\operatorname{mean}|x - x_L|^2` over symbols (``loss_layers="all"``: the mean of
    that over :math:`\mathbf{x}_1, \dots, \mathbf{x}_L`).

    :param dims: scenario sizes (uses ``num_users`` K and ``bits_per_symbol``; any M works)
    :param num_layers: :math:`L` (default 10)
    :param precision: ``"float32"`` (default) or ``"float64"``: the dtype of the internal compute
        (the output is complex64 either way)
    :param loss_layers: ``"last"`` (default) or ``"all"`` (MSE), or ``"ce"`` (the last layer's
        symbol-level cross-entropy, :func:`~linksim.agents.models._detection.symbol_ce`)

    :input y: [b, M, T], `torch.complex64`. Received signals; the ``T`` slots share ``h``.
    :input h: [b, M, K], `torch.complex64`. Channel matrices.
    :input noise_var: `float` or [b], `torch.float32`. Noise variance :math:`\sigma^2`.

    :output x_hat: [b, K, T], `torch.complex64`. The soft estimate :math:`\mathbf{x}_L`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents import Dims, build_model

        dims = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=1, history=1, horizon=1,
                    bits_per_symbol=4, symbols_per_sample=6)
        model = build_model("oampnet", dims, {"num_layers": 10})   # untrained = plain OAMP
        h = torch.randn(2, 16, 4, dtype=torch.complex64)
        x = torch.randn(2, 4, 6, dtype=torch.complex64)
        x_hat = model(h @ x, h, torch.tensor([0.1, 0.01]))
        # x_hat.shape = torch.Size([2, 4, 6])
    """

    def __init__(self, dims: Dims, num_layers: int = 10, precision: str = "float32",
                 loss_layers: str = "last"):
        super().__init__()
        self.k = int(dims.num_users)
        self.num_bits_per_symbol = int(dims.bits_per_symbol)
        self.num_layers = int(num_layers)
        if self.num_layers < 1:
            raise LinksimError("oampnet: num_layers must be >= 1")
        if precision not in ("float32", "float64"):
            raise LinksimError(f"oampnet: precision must be 'float32' or 'float64', got {precision!r}")
        if loss_layers not in ("last", "all", "ce"):
            raise LinksimError(f"oampnet: loss_layers must be 'last', 'all' or 'ce', got {loss_layers!r}")
        self.precision = precision
        self.loss_layers = loss_layers
        self.gamma = nn.Parameter(torch.ones(self.num_layers))
        self.theta = nn.Parameter(torch.ones(self.num_layers))
        self.phi = nn.Parameter(torch.ones(self.num_layers))
        self.xi = nn.Parameter(torch.zeros(self.num_layers))
        self.register_buffer("levels", pam_levels(self.num_bits_per_symbol), persistent=False)

    def _denoise(self, r: torch.Tensor, tau2: torch.Tensor) -> torch.Tensor:
        """Posterior mean of uniform QAM given ``r = x + CN(0, tau2)``; ``r [b,K,T]``, ``tau2 [b,1,T]``."""
        lv = self.levels.to(tau2.dtype)

        def axis(u):
            logits = -(u.unsqueeze(-1) - lv).square() / tau2.unsqueeze(-1)   # [b,K,T,S]
            return (torch.softmax(logits, dim=-1) * lv).sum(-1)

        return torch.complex(axis(r.real), axis(r.imag))

    def _layers(self, y: torch.Tensor, h: torch.Tensor, noise_var) -> list[torch.Tensor]:
        check_inputs("oampnet", y, h, None, self.k)
        b, m, t = y.shape
        rdt = torch.float64 if self.precision == "float64" else torch.float32
        cdt = torch.complex128 if self.precision == "float64" else torch.complex64
        y = y.to(cdt)
        h = h.to(cdt)
        s2 = noise_vector(noise_var, b, y.device, rdt)[:, None]             # [b,1]
        k = self.k
        gram = h.mH @ h                                                       # [b,K,K]
        lam, vec = torch.linalg.eigh(gram)                                    # [b,K], [b,K,K]
        lam = lam.clamp_min(0)
        tr_g = lam.sum(-1, keepdim=True).clamp_min(1e-12)                     # [b,1]
        x = y.new_zeros(b, k, t)
        out = []
        for i in range(self.num_layers):
            gamma, theta, phi, xi = (p[i].to(rdt) for p in
                                     (self.gamma, self.theta, self.phi, self.xi))
            e = y - h @ x                                                     # [b,M,T]
            v2 = ((e.abs().square().sum(1) - m * s2) / tr_g).clamp_min(1e-10)  # [b,T]
            f = v2.unsqueeze(-1) / (v2.unsqueeze(-1) * lam.unsqueeze(1) + s2.unsqueeze(-1))  # [b,T,K]
            lf = lam.unsqueeze(1) * f                                         # [b,T,K]
            c = k / lf.sum(-1).clamp_min(1e-30)                               # [b,T]
            z = vec.mH @ (h.mH @ e)                                           # [b,K,T]
            we = c.unsqueeze(1) * (vec @ (f.transpose(1, 2) * z))             # W_t e, [b,K,T]
            r = x + gamma * we
            tr_bb = (1 - theta * c.unsqueeze(-1) * lf).square().sum(-1)       # [b,T]
            tr_ww = c.square() * (lam.unsqueeze(1) * f.square()).sum(-1)      # [b,T]
            tau2 = ((tr_bb * v2 + theta.square() * s2 * tr_ww) / k).clamp_min(1e-12)
            x = phi * (self._denoise(r, tau2.unsqueeze(1)) - xi * r)
            out.append(x)
        return out

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var) -> torch.Tensor:
        return self._layers(y, h, noise_var)[-1].to(torch.complex64)

    def training_loss(self, batch: dict) -> torch.Tensor:
        y, h, nv, x = batch_tensors(batch)
        xs = self._layers(y, h, nv)
        if self.loss_layers == "ce":                   # symbol-level: the last layer's estimates
            return symbol_ce(xs[-1], batch["idx"].to(xs[-1].device), self.num_bits_per_symbol).to(torch.float32)
        if self.loss_layers == "last":
            xs = xs[-1:]
        x = x.to(xs[0].dtype)
        return (sum((xl - x).abs().square().mean() for xl in xs) / len(xs)).to(torch.float32)
