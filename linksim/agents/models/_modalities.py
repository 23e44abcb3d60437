r"""What a trained sensing model reads: per-user features of each modality, their encoders, and
how the modality embeddings are fused into one vector per user.

Features (:data:`FEATURES`; fixed maps, no parameters, ``K`` users):

- ``csi`` [b,K,M,F] -> the spatial covariance :math:`R = \frac1F\sum_f h_f h_f^H / \operatorname{tr}`
  (its ``M^2`` real numbers: the real upper triangle and the imaginary strict upper triangle) and
  the delay power profile :math:`p_\ell = \sum_m |\mathrm{IDFT}_f(h_m)_\ell|^2`, normalised
  (``F``): a beam's gain :math:`w^H R w` is linear in :math:`R`, a LOS path is a rank-one
  :math:`R` and one delay tap. They need no array geometry;
- ``csi_history`` [b,L,K,M,F] -> those of the mean covariance over the history and the mean
  delay profile, and the change of the covariance from the first sample to the last (``2M^2 + F``);
- ``gnss`` [b,K,2] m -> ``x, y``, the distance and its ``log10`` (4);
- ``rsrp`` [b,K,M] dB -> the beam RSRPs and their power mean in dB (``M + 1``).

Each modality's features are standardised (:class:`Standardize`, fitted on the first training
batch) and mapped by an MLP to an embedding of ``width``; ``fusion`` combines the embeddings:

- ``"concat"``: a linear map of their concatenation;
- ``"gate"``: MMSense's modality gate, :math:`\mathbf{z} = \sum_m g_m \mathbf{e}_m` with
  :math:`g = \operatorname{softmax}_m(\mathbf{v}^T \tanh(W \mathbf{e}_m))` per user (the weights of
  the last call are kept in :attr:`ModalityEncoder.last_gate`, per sample and user, and their means
  in :meth:`ModalityEncoder.gate_means`: training logs them at each validation, so a user sees
  which modality it trusts);
- ``"attention"``: cross-modal attention, one Transformer encoder layer over the user's modality
  tokens (each with a learned type embedding), then their mean.

``encoders = "contrastive"`` (AI2MMUM's frozen radio encoders): in the first training stage the
modality MLPs are fitted by a symmetric InfoNCE loss (CLIP's) that pairs each user's CSI embedding
with its embeddings of every other modality it reads, against the other users of the batch,

.. math::
    \mathcal{L} = \tfrac12\big(\operatorname{CE}(S, I) + \operatorname{CE}(S^T, I)\big), \quad
    S_{ij} = \hat{\mathbf{e}}^{\mathrm{csi}}_i \cdot \hat{\mathbf{e}}^{m}_j / \tau, \ \tau = 0.1

(unit-norm embeddings); afterwards they are frozen and a linear adapter per modality (starting
as the identity) maps each embedding before the fusion. ``"trained"`` (default): the MLPs are
trained with the task, end to end.
"""
from __future__ import annotations

import torch
from torch import nn

from ...errors import LinksimError

__all__ = ["ENCODERS", "FEATURES", "FUSIONS", "ModalityEncoder", "Standardize", "check_inputs", "feature_size", "features"]

FUSIONS = ("concat", "gate", "attention")
ENCODERS = ("trained", "contrastive")
#: InfoNCE temperature of the contrastive pre-training
TEMPERATURE = 0.1


def _covariance(csi: torch.Tensor) -> torch.Tensor:
    """[..., M, F] complex -> [..., M, M] complex, trace-normalised spatial covariance."""
    r = torch.einsum("...mf,...nf->...mn", csi, csi.conj()) / csi.shape[-1]
    tr = r.diagonal(dim1=-2, dim2=-1).real.sum(-1)
    return r / tr.clamp_min(1e-30)[..., None, None].to(r.dtype)


def _real_upper(r: torch.Tensor) -> torch.Tensor:
    """[..., M, M] Hermitian -> [..., M^2] real: the real upper triangle, the imaginary strict one."""
    m = r.shape[-1]
    iu, ju = torch.triu_indices(m, m, 0, device=r.device), torch.triu_indices(m, m, 1, device=r.device)
    return torch.cat([r.real[..., iu[0], iu[1]], r.imag[..., ju[0], ju[1]]], -1)


def _delay_profile(csi: torch.Tensor) -> torch.Tensor:
    """[..., M, F] complex -> [..., F] real, the normalised power per delay tap."""
    p = torch.fft.ifft(csi, dim=-1, norm="ortho").abs().square().sum(-2)
    return p / p.sum(-1, keepdim=True).clamp_min(1e-30)


def _csi(x):
    return torch.cat([_real_upper(_covariance(x)), _delay_profile(x)], -1)


def _csi_history(x):
    r = _covariance(x)                                             # [b, L, K, M, M]
    return torch.cat([_real_upper(r.mean(1)), _delay_profile(x).mean(1), _real_upper(r[:, -1] - r[:, 0])], -1)


def _gnss(x):
    d = x.norm(dim=-1, keepdim=True)
    return torch.cat([x, d, torch.log10(d.clamp_min(1.0))], -1)


def _rsrp(x):
    mean_db = 10 * torch.log10(torch.pow(10.0, x / 10).mean(-1, keepdim=True))
    return torch.cat([x, mean_db], -1)


#: modality -> (its feature map, feature count as a function of (M, F))
FEATURES = {
    "csi": (_csi, lambda m, f: m * m + f),
    "csi_history": (_csi_history, lambda m, f: 2 * m * m + f),
    "gnss": (_gnss, lambda m, f: 4),
    "rsrp": (_rsrp, lambda m, f: m + 1),
}


def feature_size(modality: str, num_antennas: int, num_subcarriers: int) -> int:
    """How many real features :func:`features` makes of ``modality``."""
    return FEATURES[modality][1](num_antennas, num_subcarriers)


def features(modality: str, x: torch.Tensor) -> torch.Tensor:
    r"""The per-user features of one modality (module docstring).

    :input modality: a name of :data:`FEATURES`.
    :input x: that modality's tensor (:func:`linksim.channel.modalities.observe`).
    :output f: [b, K, n] real, ``n = feature_size(modality, M, F)``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents.models._modalities import features
        h = torch.ones(2, 4, 16, 48, dtype=torch.complex64)            # one plane wave, no delay
        f = features("csi", h)                                          # [2, 4, 16*16 + 48]
        f[0, 0, -48]                                                    # 1.0: all power on tap 0
    """
    return FEATURES[modality][0](x).float()


class Standardize(nn.Module):
    r"""``(x - mean) / std`` per feature, the statistics fitted on the first batch seen in
    training (data-dependent initialisation, as ActNorm) and stored with the weights.

    :param n: features (the last dimension)

    :input x: [..., n] real.
    :output y: [..., n] real (unchanged before the first training batch).
    """

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0, unbiased=False).clamp_min(1e-3 * flat.std().clamp_min(1e-12)))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not bool(self.fitted):
            self.fit(x)
        return (x - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std + self.mean


def check_inputs(inputs, fusion: str, where: str, encoders: str = "trained") -> tuple[str, ...]:
    """``inputs`` (modality names), ``fusion`` and ``encoders`` checked in one line each."""
    from ...channel.modalities import MODALITIES

    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, (list, tuple)) or not inputs or len(set(inputs)) != len(inputs):
        raise LinksimError(f"{where}: model.inputs must be a list of distinct modalities, got {inputs!r}")
    bad = [m for m in inputs if m not in MODALITIES]
    if bad:
        raise LinksimError(f"{where}: unknown modality {bad[0]!r} in model.inputs (known: {', '.join(MODALITIES)})")
    if fusion not in FUSIONS:
        raise LinksimError(f"{where}: model.fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if encoders not in ENCODERS:
        raise LinksimError(f"{where}: model.encoders must be one of {', '.join(ENCODERS)}, got {encoders!r}")
    if encoders == "contrastive" and (len(inputs) < 2 or _anchor(inputs) is None):
        raise LinksimError(f"{where}: model.encoders = \"contrastive\" pairs the CSI with another modality: "
                           f"model.inputs must hold csi or csi_history and one more, got {list(inputs)}")
    return tuple(inputs)


def _anchor(inputs) -> str | None:
    """The CSI modality the contrastive loss pairs the others with."""
    return next((m for m in inputs if m in ("csi", "csi_history")), None)


class ModalityEncoder(nn.Module):
    r"""Modalities -> one embedding per user (module docstring).

    :param inputs: the modalities read, in order
    :param num_antennas: M
    :param num_subcarriers: F
    :param width: embedding width
    :param hidden: width of each modality's MLP
    :param fusion: ``"concat"`` | ``"gate"`` | ``"attention"``
    :param encoders: ``"trained"`` | ``"contrastive"`` (pre-trained by :meth:`contrastive_loss`,
        then frozen behind linear adapters)

    :input obs: dict, modality name -> tensor (at least ``inputs``).
    :output z: [b, K, width] real.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents.models._modalities import ModalityEncoder
        enc = ModalityEncoder(("csi", "gnss"), 16, 48, width=64, fusion="gate")
        obs = {"csi": torch.randn(2, 4, 16, 48, dtype=torch.complex64), "gnss": 100 * torch.randn(2, 4, 2)}
        z = enc(obs)                          # [2, 4, 64]
        enc.last_gate.shape                   # [2, 4, 2]: weight of csi, gnss per user
    """

    def __init__(self, inputs, num_antennas: int, num_subcarriers: int, width: int, hidden: int = 256,
                 fusion: str = "concat", encoders: str = "trained"):
        super().__init__()
        self.inputs, self.fusion, self.encoders = tuple(inputs), fusion, encoders
        self.norms = nn.ModuleDict({m: Standardize(feature_size(m, num_antennas, num_subcarriers)) for m in self.inputs})
        self.mlps = nn.ModuleDict({m: nn.Sequential(
            nn.Linear(feature_size(m, num_antennas, num_subcarriers), hidden), nn.GELU(), nn.Linear(hidden, width))
            for m in self.inputs})
        if encoders == "contrastive":
            self.adapters = nn.ModuleDict({m: nn.Linear(width, width) for m in self.inputs})
            for a in self.adapters.values():
                nn.init.eye_(a.weight)
                nn.init.zeros_(a.bias)
        n = len(self.inputs)
        self.last_gate: torch.Tensor | None = None
        self._gate_sum, self._gate_count = torch.zeros(n, dtype=torch.float64), 0
        if fusion == "concat":
            self.mix = nn.Linear(n * width, width)
        elif fusion == "gate":
            self.score = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        else:
            heads = next(h for h in (8, 4, 2, 1) if width % h == 0)
            self.types = nn.Parameter(0.02 * torch.randn(n, width))
            self.attend = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                                     batch_first=True, norm_first=True)

    def gate_means(self) -> dict[str, float]:
        """``{"gate_<modality>": mean weight}`` over the users seen in inference since the last call (empty
        without a gate or before any call); the sums start again."""
        if self.fusion != "gate" or not self._gate_count:
            return {}
        out = {f"gate_{m}": float(v) / self._gate_count for m, v in zip(self.inputs, self._gate_sum)}
        self._gate_sum, self._gate_count = torch.zeros_like(self._gate_sum), 0
        return out

    def embed(self, obs: dict) -> torch.Tensor:
        """[b, K, n_modalities, width]: each modality's embedding."""
        missing = [m for m in self.inputs if m not in obs]
        if missing:
            raise LinksimError(f"the model reads modality {missing[0]}, which its input lacks (it has "
                               f"{', '.join(k for k in obs if k in FEATURES)})")
        return torch.stack([self.mlps[m](self.norms[m](features(m, obs[m]))) for m in self.inputs], -2)

    def contrastive_loss(self, obs: dict) -> torch.Tensor:
        """The symmetric InfoNCE loss of the pre-training stage (module docstring); the users of
        the batch are each other's negatives."""
        e = nn.functional.normalize(self.embed(obs).flatten(0, 1), dim=-1)        # [b K, n, width]
        a = self.inputs.index(_anchor(self.inputs))
        target = torch.arange(e.shape[0], device=e.device)
        losses = []
        for j in range(len(self.inputs)):
            if j != a:
                s = e[:, a] @ e[:, j].T / TEMPERATURE
                losses.append(0.5 * (nn.functional.cross_entropy(s, target) + nn.functional.cross_entropy(s.T, target)))
        return torch.stack(losses).mean()

    def forward(self, obs: dict) -> torch.Tensor:
        if self.encoders == "contrastive":             # frozen encoders, trained adapters
            with torch.no_grad():
                raw = self.embed(obs)
            e = torch.stack([self.adapters[m](raw[..., i, :]) for i, m in enumerate(self.inputs)], -2)
        else:
            e = self.embed(obs)
        if self.fusion == "concat":
            return self.mix(e.flatten(-2))
        if self.fusion == "gate":
            g = torch.softmax(self.score(e).squeeze(-1), -1)                       # [b, K, n]
            self.last_gate = g.detach()
            if not self.training:                     # inference: counted for gate_means
                flat = self.last_gate.reshape(-1, g.shape[-1])
                self._gate_sum = self._gate_sum + flat.sum(0).double().cpu()
                self._gate_count += flat.shape[0]
            return (g[..., None] * e).sum(-2)
        b, k, n, w = e.shape
        t = self.attend((e + self.types).reshape(b * k, n, w))
        return t.mean(1).reshape(b, k, w)

