"""Learned precoder (task ``precoding``): a CNN predicting the optimal-structure parameters
``(p, lambda)``.

Following Xia et al. 2020 ("A deep learning framework for optimization of MISO downlink
beamforming"), the network does not output the beamformer itself but the ``2K`` parameters of the
sum-rate-optimal structure (Björnson, Bengtsson & Ottersten 2014), which
:func:`linksim.blocks.precoders.structured_beamformer` evaluates (differentiably, in complex128,
with ``p`` rescaled so that ``sum |w|^2 = p_tx`` exactly). The budget therefore holds by
construction, whatever the network outputs.
"""
from __future__ import annotations

import torch
from torch import nn

from ...blocks.precoders import per_sample, structured_beamformer
from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims
from ._precoding import p_lambda_from_logits, structure_loss

__all__ = ["CNNPrecoder"]


@register_arch("cnn", tasks=("precoding",))
class CNNPrecoder(AgentModel):
    r"""CNN predicting the optimal beamforming structure ``(p, lambda)`` (Xia et al. 2020).

    The precoder is the sum-rate-optimal structure (Björnson, Bengtsson & Ottersten 2014)

    .. math::

        \mathbf{w}_k = \sqrt{p_k}\,\frac{\tilde{\mathbf{w}}_k}{\|\tilde{\mathbf{w}}_k\|}, \qquad
        \tilde{\mathbf{w}}_k = \Big(\sigma^2\mathbf{I}_M
            + \sum_{j=1}^{K}\lambda_j\,\mathbf{h}_j^{\mathsf{H}}\mathbf{h}_j\Big)^{-1}
            \mathbf{h}_k^{\mathsf{H}}

    (:func:`~linksim.blocks.precoders.structured_beamformer`, with ``p`` rescaled to
    :math:`\sum_k\|\mathbf{w}_k\|^2 = P` = ``p_tx``), whose ``2K`` parameters the network predicts:

    .. math::

        \mathbf{p} = P\operatorname{softmax}(\mathbf{a}), \qquad
        \boldsymbol{\lambda} = P\operatorname{softmax}(\mathbf{b}), \qquad
        [\mathbf{a}; \mathbf{b}] = \operatorname{CNN}(\text{features}, \bar{s}).

    Both are positive and sum to :math:`P`, the convention of
    :func:`~linksim.blocks.precoders.wmmse_p_lambda` (:math:`\sum_k\lambda_k = P` at the sum-rate
    optimum; ``p`` is rescaled to ``p_tx`` by the beamformer anyway).

    Input features (``features``):

    - ``"h"`` (default, as in Xia et al.): the channel normalised by its per-sample RMS,
      :math:`\mathbf{h}_n = \mathbf{h} / \sqrt{\operatorname{mean}|h|^2}`, as a 3-channel
      :math:`K \times M` image (real part, imaginary part, magnitude; the magnitude channel makes
      the user gains directly visible to the convolutions).
    - ``"gram"``: the normalised Gram matrix :math:`\mathbf{h}_n\mathbf{h}_n^{\mathsf{H}} / M` as a
      2-channel :math:`K \times K` image (real, imaginary). It is a sufficient statistic (the SINRs
      of any beamformer in the row space of :math:`\mathbf{h}` depend on :math:`\mathbf{h}` only
      through the Gram matrix) and is invariant to unitary transforms on the antenna side, so it
      needs fewer parameters and samples; an option for ablations.

    Plus one scalar: the effective SNR

    .. math::

        s = 10\log_{10}\frac{P\,\operatorname{mean}|h|^2}{\sigma^2}\ \text{dB}, \qquad
        \bar{s} = (s - s_{\text{ref}}) / s_{\text{scale}}

    (``snr_ref_db``, ``snr_scale_db``). For unit-average-gain channels this is the usual
    :math:`10\log_{10}(P/\sigma^2)`; including the channel gain makes the pair (normalised
    :math:`\mathbf{h}`, :math:`s`) an exact sufficient statistic of the optimal
    :math:`(\mathbf{p}/P, \boldsymbol{\lambda}/P)`, which are invariant under the joint scaling
    :math:`\mathbf{h} \to c\,\mathbf{h}`, :math:`P/\sigma^2 \to P/(c^2\sigma^2)`. One model thus
    serves several powers, noise levels and path losses.

    Network: ``len(channels)`` ``Conv2d(kernel_size, padding='same') + ReLU`` layers, flatten,
    concatenate :math:`\bar{s}`, two ``Linear(hidden) + ReLU`` layers, ``Linear(2K)``. The last
    layer is initialised to zero, so an untrained model outputs equal powers and equal
    :math:`\lambda_k = P / K` (RZF directions with equal power per user).

    K is ``dims.num_users``, or any K in ``users = [K_min, K_max]``: then, as Zheng & Dai do for
    their CNN baseline of Fig. 8, the network is built for :math:`K_{\max}` users and a channel of
    K users is zero-padded to :math:`K_{\max}` rows (features computed on the K real rows, then
    padded); the outputs of the padded users are dropped before the softmaxes, so
    :math:`\mathbf{p}, \boldsymbol{\lambda}` live on the K real users. Training then draws K per
    batch from the range (``users_range``, as the LLM agent). M is fixed to
    ``dims.num_bs_antennas`` for ``features="h"``; the ``"gram"`` features work for any M.

    Training (:meth:`training_loss`): ``stage="labels"`` fits :math:`(\mathbf{p}/P,
    \boldsymbol{\lambda}/P)` to WMMSE's, ``stage="rate"`` maximises the sum-rate.

    :param dims: scenario sizes (uses ``num_users`` K and ``num_bs_antennas`` M)
    :param channels: output channels of the conv layers (default ``(32, 32, 32)``)
    :param kernel_size: conv kernel size (default 3, "same" padding)
    :param hidden: width of the two hidden dense layers (default 256)
    :param features: ``"h"`` (default) or ``"gram"``
    :param snr_ref_db: centre :math:`s_{\text{ref}}` of the SNR input feature (default 10 dB)
    :param snr_scale_db: scale :math:`s_{\text{scale}}` of the SNR input feature (default 10 dB)
    :param users: ``[K_min, K_max]`` to serve several user counts by zero-padding (default: only
        ``dims.num_users``)

    :input h: [b, K, M], `torch.complex`. Downlink channel (row k = user k).
    :input p_tx: `float` or [b], `torch.float`. Total power budget :math:`P`.
    :input noise_var: `float` or [b], `torch.float`. Noise variance :math:`\sigma^2`.

    :output w: [b, M, K], complex dtype of ``h`` (`torch.complex64` for complex64 ``h``). Precoder
        with :math:`\sum|w|^2 = P` per sample.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents import Dims, build_model

        dims = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=48, history=16, horizon=4,
                    bits_per_symbol=4, symbolsper_sample=6)
        model = build_model("cnn", dims, {"features": "gram"})   # untrained: RZF, equal powers
        h = torch.randn(8, 4, 16, dtype=torch.complex64)
        w = model(h, 1.0, 0.1)
        # w.shape = torch.Size([8, 16, 4]); (w.abs() ** 2).sum((1, 2)) = 1
        p, lam = model.predict_p_lambda(h, 1.0, 0.1)            # [8, 4] each, summing to 1
    """

    def __init__(self, dims: Dims, channels=(32, 32, 32), kernel_size: int = 3, hidden: int = 256,
                 features: str = "h", snr_ref_db: float = 10.0, snr_scale_db: float = 10.0, users=None):
        super().__init__()
        if features not in ("h", "gram"):
            raise LinksimError(f"cnn: features must be 'h' or 'gram', got {features!r}")
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or int(kernel_size) < 1 or int(hidden) < 1:
            raise LinksimError("cnn: channels, kernel_size and hidden must be positive")
        self.num_users = int(dims.num_users)
        self.k_min = self.k_max = self.num_users                   # the user counts it serves
        if users is not None:
            if (not isinstance(users, (list, tuple)) or len(users) != 2
                    or not all(isinstance(u, int) for u in users) or not 1 <= users[0] <= users[1]):
                raise LinksimError(f"cnn: model.users must be [K_min, K_max] with 1 <= K_min <= K_max, "
                                   f"got {users!r}")
            self.users_range = self.k_min, self.k_max = int(users[0]), int(users[1])  # training draws K
            self.num_users = self.k_max                           # the network's K
        self.num_antennas = int(dims.num_bs_antennas)
        self.features = features
        self.snr_ref_db, self.snr_scale_db = float(snr_ref_db), float(snr_scale_db)
        k = self.num_users
        in_ch, width = (3, self.num_antennas) if features == "h" else (2, k)
        layers = []
        for c in channels:
            layers += [nn.Conv2d(in_ch, c, int(kernel_size), padding="same"), nn.ReLU()]
            in_ch = c
        self.conv = nn.Sequential(*layers)
        self.mlp = nn.Sequential(
            nn.Linear(in_ch * k * width + 1, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 2 * k)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    # ---------------------------------------------------------------------------------- parts
    def check_dims(self, task: str, wanted: Dims) -> list[str]:
        """Sizes of a scenario this CNN cannot serve (K anywhere in ``users`` when it is set)."""
        out = []
        if self.dims.num_bs_antennas != wanted.num_bs_antennas:
            out.append(f"num_bs_antennas={self.dims.num_bs_antennas} (scenario: {wanted.num_bs_antennas})")
        if not self.k_min <= wanted.num_users <= self.k_max:
            k = self.k_max if self.k_min == self.k_max else f"{self.k_min}..{self.k_max}"
            out.append(f"num_users={k} (scenario: {wanted.num_users})")
        return out

    def _inputs(self, h: torch.Tensor, p_tx, noise_var):
        if h.dim() != 3 or not self.k_min <= h.shape[1] <= self.k_max:
            ks = f"K={self.k_max}" if self.k_min == self.k_max else f"K in {self.k_min}..{self.k_max}"
            raise LinksimError(f"cnn: expected h [b, K, M] with {ks}, got {tuple(h.shape)}")
        if self.features == "h" and h.shape[2] != self.num_antennas:
            raise LinksimError(f"cnn: built for M={self.num_antennas} antennas, got M={h.shape[2]}")
        b = h.shape[0]
        dev = self.out.weight.device
        h = h.to(device=dev, dtype=torch.complex64)
        ptx = per_sample(p_tx, b, dev)
        s2 = per_sample(noise_var, b, dev)
        ms = (h.real.double() ** 2 + h.imag.double() ** 2).mean((-2, -1)).clamp_min(1e-300)
        hn = h / ms.sqrt().to(torch.float32)[:, None, None]
        snr_db = 10.0 * torch.log10((ptx * ms / s2).clamp_min(1e-30))
        snr = ((snr_db - self.snr_ref_db) / self.snr_scale_db).to(torch.float32)[:, None]
        if self.features == "h":
            img = torch.stack([hn.real, hn.imag, hn.abs()], 1)            # [b, 3, K, M]
        else:
            g = hn @ hn.mH / hn.shape[-1]
            img = torch.stack([g.real, g.imag], 1)                          # [b, 2, K, K]
        pad = self.num_users - h.shape[1]                                   # zero users up to K_max
        if pad:
            img = nn.functional.pad(img, (0, pad if self.features == "gram" else 0, 0, pad))
        return img, snr, ptx

    def predict_p_lambda(self, h: torch.Tensor, p_tx, noise_var):
        """Network outputs ``(p [b,K], lam [b,K])`` float32, each positive and summing to ``p_tx``."""
        img, snr, ptx = self._inputs(h, p_tx, noise_var)
        z = self.conv(img).flatten(1)
        z = self.out(self.mlp(torch.cat([z, snr], 1)))
        k, k_max = h.shape[1], self.num_users                               # padded users dropped
        return p_lambda_from_logits(z[:, :k], z[:, k_max:k_max + k], ptx)

    def forward(self, h: torch.Tensor, p_tx, noise_var) -> torch.Tensor:
        p, lam = self.predict_p_lambda(h, p_tx, noise_var)
        return structured_beamformer(h.to(p.device), p, lam, noise_var, p_tx)

    # ---------------------------------------------------------------------------------- training
    def training_loss(self, batch: dict) -> torch.Tensor:
        """One batch's loss: :func:`~linksim.agents.models._precoding.structure_loss` (WMMSE's
        normalised ``(p, lambda)`` in the ``"labels"`` stage, minus the sum-rate in ``"rate"``)."""
        return structure_loss(self.predict_p_lambda, self, batch, "cnn")

