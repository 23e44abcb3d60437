"""A fully connected MIMO detector (Ye, Li, Juang 2018 style), trained (task ``detection``).

The detector protocol and the training batch are described in :mod:`._detection`.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims
from ...blocks.base import per_sample
from ...blocks.qam import constellation_points
from ._detection import batch_tensors, check_inputs

__all__ = ["DNNDetector"]


@register_arch("dnn", tasks=("detection",))
class DNNDetector(AgentModel):
    r"""Fully connected detector on ``[H, y]`` (Ye, Li, Juang 2018 style), one slot per sample.

    Each slot :math:`t` is a sample with the :math:`2MK + 2M` real input features

    .. math::

        \mathbf{u}_t = \frac{1}{s}\begin{pmatrix}
            \Re\operatorname{vec}(\mathbf{H}) \\ \Im\operatorname{vec}(\mathbf{H}) \\
            \Re\mathbf{y}_t \\ \Im\mathbf{y}_t \end{pmatrix}, \quad
        s = \sqrt{\operatorname{tr}(\mathbf{H}^{\mathsf{H}}\mathbf{H}) / K},

    (:math:`\operatorname{vec}` row-major; :math:`s` is the per-sample root mean column energy of
    :math:`\mathbf{H}`, about :math:`\sqrt{M}`): dividing both :math:`\mathbf{H}` and
    :math:`\mathbf{y}` by it keeps :math:`\mathbf{y}/s = (\mathbf{H}/s)\mathbf{x} + \mathbf{n}/s`
    while making the inputs O(1) whatever :math:`M` and the large-scale gain. Hidden layers
    ``Linear -> [LayerNorm] -> ReLU``, then ``Linear`` to the :math:`2K` reals
    :math:`[\Re\hat{\mathbf{x}}_t; \Im\hat{\mathbf{x}}_t]`. The first layer is applied as
    :math:`\mathbf{A}\operatorname{vec}(\mathbf{H})/s + \mathbf{B}\mathbf{y}_t/s` so the
    :math:`\mathbf{H}` part is computed once per sample and shared by its :math:`T` slots (the
    same function as one linear layer on the concatenation). With ``features = "raw"`` the noise variance is not used.

    Loss: :math:`\operatorname{mean}|x - \hat{x}|^2` over symbols (``loss = "mse"``).

    ``features = "gram"`` feeds the sufficient statistics instead (as DetNet does, Samuel et al.
    2017): per sample :math:`\mathbf{G} = \mathbf{H}^{\mathsf{H}}\mathbf{H}/s^2` (``2K^2`` reals) and
    :math:`\log_{10}(\sigma^2/s^2)`, per slot :math:`\mathbf{H}^{\mathsf{H}}\mathbf{y}_t/s^2`
    (``2K`` reals): the input no longer grows with M, and the network need not learn the matched
    filter. ``loss = "ce"`` makes the last layer a classifier: ``K x |C|`` logits per slot, trained
    by cross-entropy on the sent points' indices; the block output is then the posterior mean
    :math:`\hat{x}_k = \sum_j p_{kj} c_j`.

    :param dims: scenario sizes (uses ``num_bs_antennas`` M and ``num_users`` K)
    :param hidden: widths of the hidden layers (default ``[512, 256]``)
    :param layer_norm: put a ``LayerNorm`` after each hidden ``Linear`` (default True)
    :param features: ``"raw"`` (default: ``[H, y]``) or ``"gram"`` (``H^H H``, ``H^H y``, noise)
    :param loss: ``"mse"`` (default: soft symbols) or ``"ce"`` (logits over the constellation)

    :input y: [b, M, T], `torch.complex64`. Received signals; the ``T`` slots share ``h``.
    :input h: [b, M, K], `torch.complex64`. Channel matrices.
    :input noise_var: `float` or [b], `torch.float32`. Noise variance (not used).

    :output x_hat: [b, K, T], `torch.complex64`. Soft symbol estimates.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents import Dims, build_model

        dims = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=1, history=1, horizon=1,
                    bits_per_symbol=4, symbols_per_sample=6)
        model = build_model("dnn", dims, {"hidden": [128, 64]})
        h = torch.randn(2, 16, 4, dtype=torch.complex64)
        x = torch.randn(2, 4, 6, dtype=torch.complex64)
        x_hat = model(h @ x, h, 0.1)
        # x_hat.shape = torch.Size([2, 4, 6])
    """

    def __init__(self, dims: Dims, hidden: list[int] | tuple[int, ...] = (512, 256),
                 layer_norm: bool = True, features: str = "raw", loss: str = "mse"):
        super().__init__()
        if features not in ("raw", "gram") or loss not in ("mse", "ce"):
            raise LinksimError(f"dnn: features must be 'raw' or 'gram' and loss 'mse' or 'ce', got "
                               f"{features!r}, {loss!r}")
        self.features, self.loss = features, loss
        self.m, self.k = int(dims.num_bs_antennas), int(dims.num_users)
        self.bits = int(dims.bits_per_symbol)
        n_out = self.k * 2 ** self.bits if loss == "ce" else 2 * self.k
        self.hidden = [int(w) for w in hidden]
        if not self.hidden or min(self.hidden) < 1:
            raise LinksimError("dnn: hidden must be a non-empty list of positive widths")
        self.layer_norm = bool(layer_norm)
        w0 = self.hidden[0]
        gram = features == "gram"
        self.in_h = nn.Linear(2 * self.k * self.k + 1 if gram else 2 * self.m * self.k, w0)
        self.in_y = nn.Linear(2 * self.k if gram else 2 * self.m, w0, bias=False)
        layers: list[nn.Module] = []
        if self.layer_norm:
            layers.append(nn.LayerNorm(w0))
        layers.append(nn.ReLU())
        for a, b in zip(self.hidden[:-1], self.hidden[1:]):
            layers.append(nn.Linear(a, b))
            if self.layer_norm:
                layers.append(nn.LayerNorm(b))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(self.hidden[-1], n_out))
        self.body = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var=None) -> torch.Tensor:
        from sionna.phy.mimo.utils import real2complex_vector

        out = self._body(y, h, noise_var)
        if self.loss == "ce":                               # posterior mean over the constellation
            c = constellation_points(self.bits, out.device, torch.complex64)
            p = torch.softmax(out.unflatten(-1, (self.k, c.numel())), -1)          # [b,T,K,|C|]
            return (p.to(torch.complex64) @ c).transpose(1, 2).contiguous()        # [b,K,T]
        return real2complex_vector(out).transpose(1, 2).contiguous()          # [b,K,T]

    def _body(self, y, h, noise_var):
        """The network's outputs ``[b, T, 2K]`` (or ``[b, T, K |C|]`` logits)."""
        from sionna.phy.mimo.utils import complex2real_vector

        check_inputs("dnn", y, h, self.m, self.k)
        y = y.to(torch.complex64)
        h = h.to(torch.complex64)
        s = (h.abs().square().sum((1, 2)) / self.k).sqrt().clamp_min(1e-6)   # [b]
        if self.features == "gram":
            s2 = s.square()
            g = complex2real_vector((h.mH @ h).reshape(h.shape[0], -1)) / s2[:, None]            # [b,2K^2]
            nu = per_sample(noise_var, h.shape[0], h.device, torch.float32).clamp_min(1e-10) / s2
            hf = torch.cat([g, torch.log10(nu)[:, None]], -1)
            yf = complex2real_vector((h.mH @ y).transpose(1, 2)) / s2[:, None, None]           # [b,T,2K]
        else:
            hf = complex2real_vector(h.reshape(h.shape[0], -1)) / s[:, None]      # [b,2MK]
            yf = complex2real_vector(y.transpose(1, 2)) / s[:, None, None]        # [b,T,2M]
        z = self.in_h(hf).unsqueeze(1) + self.in_y(yf)                       # [b,T,w0]
        return self.body(z)

    def training_loss(self, batch: dict) -> torch.Tensor:
        y, h, nv, x = batch_tensors(batch)
        if self.loss == "ce":
            logits = self._body(y, h, nv).unflatten(-1, (self.k, 2 ** self.bits))        # [B,T,K,|C|]
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               batch["idx"].transpose(1, 2).reshape(-1).to(logits.device))
        return (self(y, h, nv) - x.to(torch.complex64)).abs().square().mean()
