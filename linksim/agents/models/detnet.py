"""DetNet (Samuel, Diskin, Wiesel 2017), a trained MIMO detector (task ``detection``).

The detector protocol and the training batch are described in :mod:`._detection`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims
from ._detection import batch_tensors, check_inputs, pam_levels, symbol_ce

__all__ = ["DetNet"]


@register_arch("detnet", tasks=("detection",))
class DetNet(AgentModel):
    r"""DetNet (Samuel, Diskin, Wiesel 2017): unfolded projected gradient descent in the real model.

    The complex model :math:`\mathbf{y} = \mathbf{H}\mathbf{x} + \mathbf{n}` is written as the real
    model

    .. math::

        \mathbf{y}_r = \mathbf{H}_r \mathbf{x}_r + \mathbf{n}_r, \quad
        \mathbf{x}_r = \begin{pmatrix} \Re\mathbf{x} \\ \Im\mathbf{x} \end{pmatrix}
        \in \mathbb{R}^{2K}, \quad
        \mathbf{H}_r = \begin{pmatrix} \Re\mathbf{H} & -\Im\mathbf{H} \\
                                       \Im\mathbf{H} & \Re\mathbf{H} \end{pmatrix}
        \in \mathbb{R}^{2M\times 2K}

    (Sionna's :func:`~sionna.phy.mimo.utils.complex2real_vector` and
    :func:`~sionna.phy.mimo.utils.complex2real_matrix`). Only the sufficient statistics
    :math:`\mathbf{H}_r^{\mathsf{T}}\mathbf{y}_r` (the real form of
    :math:`\mathbf{H}^{\mathsf{H}}\mathbf{y}`) and :math:`\mathbf{H}_r^{\mathsf{T}}\mathbf{H}_r`
    (the real form of :math:`\mathbf{H}^{\mathsf{H}}\mathbf{H}`) enter, both divided by the
    per-sample scale :math:`s = \operatorname{tr}(\mathbf{H}^{\mathsf{H}}\mathbf{H}) / K` (mean
    column energy, about :math:`M`), so the inputs are O(1) whatever :math:`M` (the scaling does not
    change the least-squares problem). Starting from :math:`\mathbf{x}_0 = \mathbf{0}`,
    :math:`\mathbf{v}_0 = \mathbf{0}`, layer :math:`l = 1, \dots, L` computes

    .. math::

        \mathbf{z}_l &= \operatorname{ReLU}\left(\mathbf{W}_{1,l}
            \left[\mathbf{v}_{l-1};\ \mathbf{x}_{l-1};\ \mathbf{H}_r^{\mathsf{T}}\mathbf{y}_r / s;\
            (\mathbf{H}_r^{\mathsf{T}}\mathbf{H}_r / s)\,\mathbf{x}_{l-1}\right]
            + \mathbf{b}_{1,l}\right) \\
        \mathbf{x}_l &= (1 - a)\,\psi_{t_l}\left(\mathbf{W}_{2,l}\mathbf{z}_l + \mathbf{b}_{2,l}\right)
            + a\,\mathbf{x}_{l-1} \\
        \mathbf{v}_l &= \mathbf{W}_{3,l}\mathbf{z}_l + \mathbf{b}_{3,l}
            \quad (l < L;\ \text{the last layer has no } \mathbf{v})

    :math:`\psi_t` is the soft projection onto the :math:`S = \sqrt{|\mathcal{C}|}` PAM levels
    :math:`\ell_0 < \dots < \ell_{S-1}` (spacing :math:`D`) of one real component: a staircase of
    :math:`S - 1` linear ramps, one centred on each midpoint
    :math:`m_j = (\ell_j + \ell_{j+1}) / 2`, each rising by :math:`D` over
    :math:`[m_j - w, m_j + w]`,

    .. math::

        \psi_t(u) = \ell_0 + \sum_{j=0}^{S-2} \frac{D}{2w}
            \left(\operatorname{ReLU}(u - m_j + w) - \operatorname{ReLU}(u - m_j - w)\right),
        \quad w = \max\left(|t| D / 2,\ 10^{-3} D\right),

    i.e. it equals :math:`\ell_0` below, :math:`\ell_{S-1}` above, the nearest level away from the
    midpoints, and is linear near them. :math:`t_l` is trained per layer (init 0.5, as the paper's
    BPSK :math:`t = 0.5` with :math:`D = 2`). :math:`a` is the paper's residual mixing (default
    0.1, i.e. their :math:`\alpha = 0.9`). The noise variance is not used.

    Loss (the paper's normalised, layer-weighted loss), per real vector and averaged:

    .. math::

        \mathcal{L} = \operatorname{mean}_{\text{vectors}} \sum_{l=1}^{L} \log(l)\,
            \frac{\|\mathbf{x} - \mathbf{x}_l\|^2}{\|\mathbf{x} - \mathbf{x}_{\text{ZF}}\|^2},
        \quad \mathbf{x}_{\text{ZF}}
            = (\mathbf{H}^{\mathsf{H}}\mathbf{H})^{-1}\mathbf{H}^{\mathsf{H}}\mathbf{y}

    (:math:`\log 1 = 0`, so layer 1 is only trained through later layers; the denominator is
    clamped at :math:`10^{-8}`); ``loss_kind="mse"`` gives instead
    :math:`\sum_l (l / L)\,\operatorname{mean}|x - x_l|^2` over symbols (weights rising with
    depth; better behaved when :math:`\mathbf{H}^{\mathsf{H}}\mathbf{H}` is near singular).

    :param dims: scenario sizes (uses ``num_bs_antennas`` M, ``num_users`` K, ``bits_per_symbol``)
    :param num_layers: number of unfolded layers :math:`L` (default ``3 K``)
    :param hidden: width of :math:`\mathbf{z}` (default ``16 K`` = 8 x the real dimension ``2K``,
        as the paper)
    :param v_dim: width of the memory :math:`\mathbf{v}` (default ``4 K`` = the real dimension
        ``2K`` times 2)
    :param residual: weight :math:`a` of the previous estimate in :math:`\mathbf{x}_l` (default 0.1)
    :param t_init: initial ramp half-width :math:`t` of :math:`\psi` in units of :math:`D / 2`
        (default 0.5)
    :param loss_kind: ``"paper"`` (default), ``"mse"`` or ``"ce"`` (each layer's symbol-level
        cross-entropy, :func:`~linksim.agents.models._detection.symbol_ce`, weighted as the paper's)

    :input y: [b, M, T], `torch.complex64`. Received signals; the ``T`` slots share ``h``.
    :input h: [b, M, K], `torch.complex64`. Channel matrices.
    :input noise_var: `float` or [b], `torch.float32`. Noise variance (not used).

    :output x_hat: [b, K, T], `torch.complex64`. Soft estimate of the last layer,
        :math:`\mathbf{x}_L` in complex form.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents import Dims, build_model

        dims = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=1, history=1, horizon=1,
                    bits_per_symbol=4, symbols_per_sample=6)
        model = build_model("detnet", dims, {})              # untrained; or agent:agents/detnet
        h = torch.randn(2, 16, 4, dtype=torch.complex64)
        x = torch.randn(2, 4, 6, dtype=torch.complex64)
        x_hat = model(h @ x, h, 0.1)
        # x_hat.shape = torch.Size([2, 4, 6])
    """

    def __init__(self, dims: Dims, num_layers: int | None = None, hidden: int | None = None,
                 v_dim: int | None = None, residual: float = 0.1, t_init: float = 0.5,
                 loss_kind: str = "paper"):
        super().__init__()
        k = int(dims.num_users)
        self.m, self.k = int(dims.num_bs_antennas), k
        self.num_bits_per_symbol = int(dims.bits_per_symbol)
        self.num_layers = int(num_layers) if num_layers is not None else 3 * k
        self.hidden = int(hidden) if hidden is not None else 16 * k
        self.v_dim = int(v_dim) if v_dim is not None else 4 * k
        self.residual = float(residual)
        if loss_kind not in ("paper", "mse", "ce"):
            raise LinksimError(f"detnet: loss_kind must be 'paper', 'mse' or 'ce', got {loss_kind!r}")
        self.loss_kind = loss_kind
        if self.num_layers < 1 or self.hidden < 1 or self.v_dim < 1:
            raise LinksimError("detnet: num_layers, hidden and v_dim must be >= 1")
        n = 2 * k
        self.fc_in = nn.ModuleList(nn.Linear(self.v_dim + 3 * n, self.hidden)
                                   for _ in range(self.num_layers))
        self.fc_x = nn.ModuleList(nn.Linear(self.hidden, n) for _ in range(self.num_layers))
        # the last layer's v would be unused: L - 1 memory maps
        self.fc_v = nn.ModuleList(nn.Linear(self.hidden, self.v_dim)
                                  for _ in range(self.num_layers - 1))
        self.t = nn.Parameter(torch.full((self.num_layers,), float(t_init)))
        levels = pam_levels(self.num_bits_per_symbol)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("midpoints", (levels[1:] + levels[:-1]) / 2, persistent=False)

    def _psi(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lv = self.levels
        step = lv[1] - lv[0]
        w = (t.abs() * step / 2).clamp_min(1e-3 * step)
        d = u.unsqueeze(-1) - self.midpoints                                  # [..., S-1]
        ramps = (torch.relu(d + w) - torch.relu(d - w)) * (step / (2 * w))
        return lv[0] + ramps.sum(-1)

    def _layers(self, y: torch.Tensor, h: torch.Tensor) -> list[torch.Tensor]:
        """Real estimates of every layer, each ``[b, T, 2K]`` float32."""
        from sionna.phy.mimo.utils import complex2real_matrix, complex2real_vector

        check_inputs("detnet", y, h, self.m, self.k)
        b, _, t = y.shape
        y = y.to(torch.complex64)
        h = h.to(torch.complex64)
        gram = h.mH @ h                                                       # [b,K,K]
        scale = gram.diagonal(dim1=-2, dim2=-1).real.mean(-1).clamp_min(1e-12)  # [b]
        hty = complex2real_vector((h.mH @ y).transpose(1, 2)) / scale[:, None, None]  # [b,T,2K]
        hth = complex2real_matrix(gram) / scale[:, None, None]                # [b,2K,2K]
        x = hty.new_zeros(b, t, 2 * self.k)
        v = hty.new_zeros(b, t, self.v_dim)
        out = []
        for i in range(self.num_layers):
            hthx = x @ hth.transpose(1, 2)                                    # [b,T,2K]
            z = torch.relu(self.fc_in[i](torch.cat([v, x, hty, hthx], dim=-1)))
            x_new = self._psi(self.fc_x[i](z), self.t[i])
            x = (1 - self.residual) * x_new + self.residual * x
            if i < self.num_layers - 1:
                v = self.fc_v[i](z)
            out.append(x)
        return out

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var=None) -> torch.Tensor:
        from sionna.phy.mimo.utils import real2complex_vector

        x = self._layers(y, h)[-1]                                            # [b,T,2K]
        return real2complex_vector(x).transpose(1, 2).contiguous().to(torch.complex64)

    def training_loss(self, batch: dict) -> torch.Tensor:
        y, h, _, x = batch_tensors(batch)
        xs = self._layers(y, h)
        # [Re x; Im x] stacked along K (dim 1), then viewed as [B,T,2K]: not Sionna's
        # complex2real_vector (which stacks along the last dim into a contiguous [B,T,2K]) because
        # this layout fixes the summation order of the losses below (bit-identical training)
        xc = x.to(torch.complex64)
        xr = torch.cat([xc.real, xc.imag], dim=1).transpose(1, 2)             # [B,T,2K]
        num_layers = len(xs)
        if self.loss_kind == "ce":             # symbol-level, layer-weighted as the paper's loss
            idx = batch["idx"].to(xr.device)
            return sum((l + 1) / num_layers * symbol_ce(torch.complex(xl[..., :self.k], xl[..., self.k:]),
                                                        idx.transpose(1, 2), self.num_bits_per_symbol)
                       for l, xl in enumerate(xs))
        if self.loss_kind == "mse":
            return sum((l + 1) / num_layers * (xr - xl).square().sum(-1).mean() / self.k
                       for l, xl in enumerate(xs))
        hc = h.to(torch.complex64)
        x_zf = torch.linalg.solve(hc.mH @ hc, hc.mH @ y.to(torch.complex64))  # [B,K,T]
        den = (x.to(torch.complex64) - x_zf).abs().square().sum(1).clamp_min(1e-8)  # [B,T]
        loss = xr.new_zeros(())
        for l, xl in enumerate(xs):
            if l == 0:
                continue                                                      # log(1) = 0
            loss = loss + math.log(l + 1) * ((xr - xl).square().sum(-1) / den).mean()
        return loss
