"""Trained MIMO detectors (agent models for the ``detection`` task): DetNet, OAMP-Net2, a plain DNN.

All three follow the detector protocol of :mod:`linksim.blocks.registry`::

    model(y [b, M, T] complex64, h [b, M, K] complex64, noise_var float | [b]) -> x_hat [b, K, T] complex64

with ``y = h @ x + n``, ``x`` from Sionna's unit-energy square QAM with ``dims.bits_per_symbol`` bits
and ``n ~ CN(0, noise_var I_M)``. The ``T`` symbol slots share ``h`` and are detected as ``T``
independent vectors (no model looks across slots). The outputs are *soft* estimates (not snapped to
the constellation; use :func:`linksim.blocks.qam.hard_decision` for decisions).

``training_loss(batch)`` takes a detection batch as documented in :mod:`linksim.agents.base`
(``y [B,M,T]``, ``h [B,M,K]``, ``noise_var [B]``, ``x [B,K,T]``; ``idx`` is not used) and returns a
scalar float32 loss.

Kinds:

- ``detnet``  : DetNet (Samuel, Diskin, Wiesel 2017), unfolded projected gradient in the real model.
- ``oampnet`` : OAMP-Net2 (He, Wen, Jin, Li 2020), OAMP with 4 trainable scalars per layer.
- ``dnn``     : fully connected detector on ``[H, y]`` per slot (Ye, Li, Juang 2018 style).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...blocks.detectors import noise_vector
from ...blocks.qam import constellation_points
from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims


# --------------------------------------------------------------------------- helpers
def _check_inputs(name: str, y: torch.Tensor, h: torch.Tensor, m: int | None = None,
                  k: int | None = None) -> None:
    if y.dim() != 3 or h.dim() != 3 or y.shape[0] != h.shape[0] or y.shape[1] != h.shape[1]:
        raise LinksimError(f"{name}: expected y [b,M,T] and h [b,M,K] with equal b and M, "
                           f"got y {tuple(y.shape)} and h {tuple(h.shape)}")
    if (m is not None and h.shape[1] != m) or (k is not None and h.shape[2] != k):
        raise LinksimError(f"{name}: built for M={m}, K={k}, got h {tuple(h.shape)}")




def _pam_levels(num_bits_per_symbol: int) -> torch.Tensor:
    """The ``sqrt(|C|)`` levels (ascending, float32) of the real (= imaginary) PAM component."""
    pts = constellation_points(num_bits_per_symbol, "cpu")
    return torch.unique(torch.round(pts.real.double() * 1e6) / 1e6).sort().values.to(torch.float32)


def _real_gram(g: torch.Tensor) -> torch.Tensor:
    """Complex ``G [..., K, K]`` -> real ``[[Re G, -Im G], [Im G, Re G]]`` ``[..., 2K, 2K]``."""
    top = torch.cat([g.real, -g.imag], dim=-1)
    bot = torch.cat([g.imag, g.real], dim=-1)
    return torch.cat([top, bot], dim=-2)


def _c2r(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Complex ``[..., K, ...]`` -> real ``[..., 2K, ...]`` as ``[Re; Im]`` along ``dim``."""
    return torch.cat([v.real, v.imag], dim=dim)


def _r2c(v: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`_c2r`."""
    re, im = torch.chunk(v, 2, dim=dim)
    return torch.complex(re.contiguous(), im.contiguous())


def _batch_tensors(batch: dict):
    try:
        return batch["y"], batch["h"], batch["noise_var"], batch["x"]
    except KeyError as e:
        raise LinksimError(f"detection batch lacks key {e.args[0]!r} "
                           "(needs y, h, noise_var, x)") from None


# --------------------------------------------------------------------------- DetNet
@register_arch("detnet", tasks=("detection",))
class DetNet(AgentModel):
    r"""DetNet (Samuel, Diskin, Wiesel 2017): unfolded projected gradient descent in the real model.

    The complex model ``y = Hx + n`` is written as the real model ``y_r = H_r x_r + n_r`` with
    ``x_r = [Re x; Im x]`` (``2K``), ``H_r = [[Re H, -Im H], [Im H, Re H]]`` (``2M x 2K``). Only the
    sufficient statistics ``H_r^T y_r = [Re H^H y; Im H^H y]`` and ``H_r^T H_r`` (the real form of
    ``H^H H``) enter, both divided by the per-sample scale ``s = tr(H^H H) / K`` (mean column
    energy, about ``M``), so the inputs are O(1) whatever ``M`` (the scaling does not change the
    least-squares problem). Starting from ``x_0 = 0``, ``v_0 = 0``, layer ``l = 1..L`` computes::

        z_l = ReLU(W1_l [v_{l-1}; x_{l-1}; H^T y / s; (H^T H / s) x_{l-1}] + b1_l)
        x_l = (1 - a) psi_{t_l}(W2_l z_l + b2_l) + a x_{l-1}
        v_l = W3_l z_l + b3_l                      (l < L; the last layer has no v)

    ``psi_t`` is the soft projection onto the ``S = sqrt(|C|)`` PAM levels ``l_0 < ... < l_{S-1}``
    (spacing ``D``) of one real component: a staircase of ``S - 1`` linear ramps, one centred on
    each midpoint ``m_j = (l_j + l_{j+1}) / 2``, each rising by ``D`` over ``[m_j - w, m_j + w]``::

        psi_t(u) = l_0 + sum_j (D / 2w) (ReLU(u - m_j + w) - ReLU(u - m_j - w)),   w = |t| D / 2

    i.e. it equals ``l_0`` below, ``l_{S-1}`` above, the nearest level away from the midpoints, and
    is linear near them. ``t_l`` is trained per layer (init 0.5, as the paper's BPSK ``t = 0.5``
    with ``D = 2``). ``a`` is the paper's residual mixing (default 0.1, i.e. their ``alpha = 0.9``).
    The noise variance is not used.

    Loss (the paper's normalised, layer-weighted loss), per real vector and averaged::

        loss = mean_vectors sum_l log(l) ||x - x_l||^2 / ||x - x_ZF||^2

    with ``x_ZF = (H^H H)^-1 H^H y`` (``log(1) = 0``, so layer 1 is only trained through later
    layers); ``loss_kind="mse"`` gives instead ``sum_l (l / L) mean|x - x_l|^2`` (weights rising
    with depth; better behaved when ``H^H H`` is near singular).

    :param dims: scenario sizes (uses ``num_bs_antennas`` M, ``num_users`` K, ``bits_per_symbol``)
    :param num_layers: number of unfolded layers ``L`` (default ``3 K``)
    :param hidden: width of ``z`` (default ``16 K`` = 8 x the real dimension ``2K``, as the paper)
    :param v_dim: width of the memory ``v`` (default ``4 K`` = the real dimension ``2K`` times 2)
    :param residual: weight ``a`` of the previous estimate in ``x_l`` (default 0.1)
    :param t_init: initial ramp half-width ``t`` of ``psi`` in units of ``D / 2`` (default 0.5)
    :param loss_kind: ``"paper"`` (default) or ``"mse"``

    Input
    -----
    y : [b, M, T], torch.complex64
    h : [b, M, K], torch.complex64
    noise_var : float or [b], torch.float32 (ignored)

    Output
    ------
    x_hat : [b, K, T], torch.complex64
        The last layer's estimate.
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
        if loss_kind not in ("paper", "mse"):
            raise LinksimError(f"detnet: loss_kind must be 'paper' or 'mse', got {loss_kind!r}")
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
        levels = _pam_levels(self.num_bits_per_symbol)
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
        _check_inputs("detnet", y, h, self.m, self.k)
        b, _, t = y.shape
        y = y.to(torch.complex64)
        h = h.to(torch.complex64)
        gram = h.mH @ h                                                       # [b,K,K]
        scale = gram.diagonal(dim1=-2, dim2=-1).real.mean(-1).clamp_min(1e-12)  # [b]
        hty = _c2r(h.mH @ y, dim=1).transpose(1, 2) / scale[:, None, None]    # [b,T,2K]
        hth = _real_gram(gram) / scale[:, None, None]                          # [b,2K,2K]
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
        x = self._layers(y, h)[-1]                                            # [b,T,2K]
        return _r2c(x.transpose(1, 2), dim=1).to(torch.complex64)

    def training_loss(self, batch: dict) -> torch.Tensor:
        y, h, _, x = _batch_tensors(batch)
        xs = self._layers(y, h)
        xr = _c2r(x.to(torch.complex64), dim=1).transpose(1, 2)              # [B,T,2K]
        num_layers = len(xs)
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


# --------------------------------------------------------------------------- OAMP-Net2
@register_arch("oampnet", tasks=("detection",))
class OAMPNet(AgentModel):
    r"""OAMP-Net2 (He, Wen, Jin, Li 2020): OAMP unfolded with 4 trainable scalars per layer.

    Complex model, ``x_0 = 0``. Layer ``t = 0..L-1`` (all quantities per received vector)::

        v_t^2  = max((||y - H x_t||^2 - M s2) / tr(H^H H), eps)          # prior error variance
        W^_t   = v_t^2 H^H (v_t^2 H H^H + s2 I_M)^-1                     # LMMSE
        W_t    = K / tr(W^_t H) * W^_t                                   # de-correlated
        r_t    = x_t + gamma_t W_t (y - H x_t)
        B_t    = I_K - theta_t W_t H
        tau_t^2 = (tr(B_t B_t^H) v_t^2 + theta_t^2 s2 tr(W_t W_t^H)) / K # var of r_t - x (complex)
        x_{t+1} = phi_t (E[x | r_t; tau_t^2] - xi_t r_t)

    where ``s2`` is the noise variance and ``E[x | r; tau^2]`` is the posterior mean of a uniform
    QAM symbol observed as ``r = x + CN(0, tau^2)`` (computed per real axis: square QAM is a product
    of two PAMs, each axis seeing noise variance ``tau^2 / 2``). The output is ``x_L``. At the
    initial parameters ``gamma = theta = phi = 1``, ``xi = 0`` this is plain OAMP with the LMMSE
    linear stage and the MMSE denoiser. ``eps = 1e-10``.

    Implementation: with the eigen-decomposition ``H^H H = V diag(lam) V^H`` (once per sample, shared
    by the T slots) ``W_t = c V diag(f) V^H H^H``, ``f_i = v^2 / (v^2 lam_i + s2)``,
    ``c = K / sum_i lam_i f_i``; ``tr(B B^H) = sum_i (1 - theta c lam_i f_i)^2`` and
    ``tr(W W^H) = c^2 sum_i lam_i f_i^2``, so no M x M inverse is formed (exact, also for M < K).

    Loss: ``mean |x - x_L|^2`` over symbols (``loss_layers="all"``: the mean of that over
    ``x_1..x_L``).

    :param dims: scenario sizes (uses ``num_users`` K and ``bits_per_symbol``; any M works)
    :param num_layers: ``L`` (default 10)
    :param precision: ``"float32"`` (default) or ``"float64"``: the dtype of the internal compute
        (the output is complex64 either way)
    :param loss_layers: ``"last"`` (default) or ``"all"``

    Input
    -----
    y : [b, M, T], torch.complex64
    h : [b, M, K], torch.complex64
    noise_var : float or [b], torch.float32

    Output
    ------
    x_hat : [b, K, T], torch.complex64
        The soft estimate ``x_L``.
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
        if loss_layers not in ("last", "all"):
            raise LinksimError(f"oampnet: loss_layers must be 'last' or 'all', got {loss_layers!r}")
        self.precision = precision
        self.loss_layers = loss_layers
        self.gamma = nn.Parameter(torch.ones(self.num_layers))
        self.theta = nn.Parameter(torch.ones(self.num_layers))
        self.phi = nn.Parameter(torch.ones(self.num_layers))
        self.xi = nn.Parameter(torch.zeros(self.num_layers))
        self.register_buffer("levels", _pam_levels(self.num_bits_per_symbol), persistent=False)

    def _denoise(self, r: torch.Tensor, tau2: torch.Tensor) -> torch.Tensor:
        """Posterior mean of uniform QAM given ``r = x + CN(0, tau2)``; ``r [b,K,T]``, ``tau2 [b,1,T]``."""
        lv = self.levels.to(tau2.dtype)

        def axis(u):
            logits = -(u.unsqueeze(-1) - lv).square() / tau2.unsqueeze(-1)   # [b,K,T,S]
            return (torch.softmax(logits, dim=-1) * lv).sum(-1)

        return torch.complex(axis(r.real), axis(r.imag))

    def _layers(self, y: torch.Tensor, h: torch.Tensor, noise_var) -> list[torch.Tensor]:
        _check_inputs("oampnet", y, h, None, self.k)
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
        y, h, nv, x = _batch_tensors(batch)
        xs = self._layers(y, h, nv)
        if self.loss_layers == "last":
            xs = xs[-1:]
        x = x.to(xs[0].dtype)
        return (sum((xl - x).abs().square().mean() for xl in xs) / len(xs)).to(torch.float32)


# --------------------------------------------------------------------------- DNN
@register_arch("dnn", tasks=("detection",))
class DNNDetector(AgentModel):
    r"""Fully connected detector on ``[H, y]`` (Ye, Li, Juang 2018 style), one slot per sample.

    Each slot ``t`` is a sample with input features
    ``[Re vec(H); Im vec(H); Re y_t; Im y_t] / s`` (``2MK + 2M`` reals), where
    ``s = sqrt(tr(H^H H) / K)`` is the per-sample root mean column energy of ``H`` (about
    ``sqrt(M)``): dividing both ``H`` and ``y`` by it keeps ``y/s = (H/s) x + n/s`` while making the
    inputs O(1) whatever ``M`` and the large-scale gain. Hidden layers ``Linear -> [LayerNorm] ->
    ReLU``, then ``Linear`` to ``2K`` reals ``[Re x; Im x]``. The first layer is applied as
    ``A vec(H) + B y_t`` so the ``H`` part is computed once per sample and shared by its ``T``
    slots (the same function as one linear layer on the concatenation). The noise variance is not
    used.

    Loss: ``mean |x - x_hat|^2`` over symbols.

    :param dims: scenario sizes (uses ``num_bs_antennas`` M and ``num_users`` K)
    :param hidden: widths of the hidden layers (default ``[512, 256]``)
    :param layer_norm: put a ``LayerNorm`` after each hidden ``Linear`` (default True)

    Input
    -----
    y : [b, M, T], torch.complex64
    h : [b, M, K], torch.complex64
    noise_var : float or [b], torch.float32 (ignored)

    Output
    ------
    x_hat : [b, K, T], torch.complex64
    """

    def __init__(self, dims: Dims, hidden: list[int] | tuple[int, ...] = (512, 256),
                 layer_norm: bool = True):
        super().__init__()
        self.m, self.k = int(dims.num_bs_antennas), int(dims.num_users)
        self.hidden = [int(w) for w in hidden]
        if not self.hidden or min(self.hidden) < 1:
            raise LinksimError("dnn: hidden must be a non-empty list of positive widths")
        self.layer_norm = bool(layer_norm)
        w0 = self.hidden[0]
        self.in_h = nn.Linear(2 * self.m * self.k, w0)
        self.in_y = nn.Linear(2 * self.m, w0, bias=False)
        layers: list[nn.Module] = []
        if self.layer_norm:
            layers.append(nn.LayerNorm(w0))
        layers.append(nn.ReLU())
        for a, b in zip(self.hidden[:-1], self.hidden[1:]):
            layers.append(nn.Linear(a, b))
            if self.layer_norm:
                layers.append(nn.LayerNorm(b))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(self.hidden[-1], 2 * self.k))
        self.body = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var=None) -> torch.Tensor:
        _check_inputs("dnn", y, h, self.m, self.k)
        y = y.to(torch.complex64)
        h = h.to(torch.complex64)
        s = (h.abs().square().sum((1, 2)) / self.k).sqrt().clamp_min(1e-6)   # [b]
        hf = _c2r(h.reshape(h.shape[0], -1), dim=-1) / s[:, None]            # [b,2MK]
        yf = _c2r(y.transpose(1, 2), dim=-1) / s[:, None, None]              # [b,T,2M]
        z = self.in_h(hf).unsqueeze(1) + self.in_y(yf)                       # [b,T,w0]
        out = self.body(z)                                                   # [b,T,2K]
        return _r2c(out.transpose(1, 2), dim=1)

    def training_loss(self, batch: dict) -> torch.Tensor:
        y, h, nv, x = _batch_tensors(batch)
        return (self(y, h, nv) - x.to(torch.complex64)).abs().square().mean()


__all__ = ["DetNet", "OAMPNet", "DNNDetector"]
