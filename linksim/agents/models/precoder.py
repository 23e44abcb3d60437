"""Learned precoder: a CNN predicting the optimal-structure parameters ``(p, lambda)``.

Following Xia et al. 2020 ("A deep learning framework for optimization of MISO downlink
beamforming"), the network does not output the beamformer itself but the ``2K`` parameters of the
sum-rate-optimal structure (Björnson, Bengtsson & Ottersten 2014),

    w_k = sqrt(p_k) * w~_k / ||w~_k||,   w~_k = (sigma^2 I + sum_j lambda_j h_j^H h_j)^{-1} h_k^H,

which :func:`linksim.blocks.precoders.structured_beamformer` evaluates (differentiably, in
complex128, with ``p`` rescaled so that ``sum |w|^2 = p_tx`` exactly). The budget therefore holds by
construction, whatever the network outputs.
"""
from __future__ import annotations

import torch
from torch import nn

from ...blocks.precoders import _per_sample, structured_beamformer, sum_rate
from ...errors import LinksimError
from ...registry import register_arch
from ..base import AgentModel, Dims

__all__ = ["CNNPrecoder"]


@register_arch("cnn", tasks=("precoding",))
class CNNPrecoder(AgentModel):
    r"""CNN predicting the optimal beamforming structure ``(p, lambda)`` (Xia et al. 2020).

    Input features (``features``):

    - ``"h"`` (default, as in Xia et al.): the channel normalised by its per-sample RMS,
      ``h / sqrt(mean |h|^2)``, as a 3-channel ``K x M`` image (real part, imaginary part,
      magnitude; the magnitude channel makes the user gains directly visible to the convolutions).
    - ``"gram"``: the normalised Gram matrix ``h_n h_n^H / M`` (``h_n`` as above) as a 2-channel
      ``K x K`` image (real, imaginary). It is a sufficient statistic (the SINRs of any beamformer in
      the row space of ``h`` depend on ``h`` only through ``G``) and is invariant to unitary
      transforms on the antenna side, so it needs fewer parameters and samples; an option for
      ablations.

    Plus one scalar: the effective SNR ``s = 10 log10(p_tx * mean|h|^2 / noise_var)`` dB, fed as
    ``(s - snr_ref_db) / snr_scale_db``. For unit-average-gain channels this is the usual
    ``10 log10(p_tx / noise_var)``; including the channel gain makes the pair (normalised ``h``,
    ``s``) an exact sufficient statistic of the optimal ``(p/p_tx, lambda/p_tx)``, which are
    invariant under the joint scaling ``h -> c h``, ``p_tx/noise_var -> p_tx/(c^2 noise_var)``.
    One model thus serves several powers, noise levels and path losses.

    Network: ``len(channels)`` ``Conv2d(kernel_size, padding='same') + ReLU`` layers, flatten,
    concatenate the SNR feature, two ``Linear(hidden) + ReLU`` layers, ``Linear(2K)``. The last
    layer is initialised to zero, so an untrained model outputs equal powers and equal
    ``lambda = p_tx / K`` (RZF directions with equal power per user).

    Outputs: ``p = p_tx * softmax(a)`` and ``lambda = p_tx * softmax(b)`` (``a, b`` the two halves of
    the ``2K`` outputs): positive, each summing to ``p_tx``, the convention of
    :func:`~linksim.blocks.precoders.wmmse_p_lambda` (``sum(lambda) = p_tx`` at the sum-rate
    optimum; ``p`` is rescaled to ``p_tx`` by the beamformer anyway).

    K is fixed to ``dims.num_users`` (the paper trains its LLM on K = 3..8; a CNN on a ``K x M``
    image with a dense head has a fixed K). M is fixed to ``dims.num_bs_antennas`` for
    ``features="h"``; the ``"gram"`` features work for any M.

    Parameters
    ----------
    dims : Dims
        Uses ``num_users`` (K) and ``num_bs_antennas`` (M).
    channels : sequence of int
        Output channels of the conv layers (default ``(32, 32, 32)``).
    kernel_size : int
        Conv kernel size (default 3, "same" padding).
    hidden : int
        Width of the two hidden dense layers (default 256).
    features : str
        ``"h"`` (default) or ``"gram"``.
    snr_ref_db, snr_scale_db : float
        Centre and scale of the SNR input feature (defaults 10 and 10 dB).

    Input
    -----
    h : [b, K, M], complex
        Downlink channel.
    p_tx : float or [b] tensor
        Total power budget.
    noise_var : float or [b] tensor
        Noise variance.

    Output
    ------
    w : [b, M, K], torch.complex64
        Precoder with ``sum |w|^2 = p_tx`` per sample.
    """

    def __init__(self, dims: Dims, channels=(32, 32, 32), kernel_size: int = 3, hidden: int = 256,
                 features: str = "h", snr_ref_db: float = 10.0, snr_scale_db: float = 10.0):
        super().__init__()
        if features not in ("h", "gram"):
            raise LinksimError(f"cnn: features must be 'h' or 'gram', got {features!r}")
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or int(kernel_size) < 1 or int(hidden) < 1:
            raise LinksimError("cnn: channels, kernel_size and hidden must be positive")
        self.num_users = int(dims.num_users)
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
    def _inputs(self, h: torch.Tensor, p_tx, noise_var):
        if h.dim() != 3 or h.shape[1] != self.num_users:
            raise LinksimError(f"cnn: expected h [b, K={self.num_users}, M], got {tuple(h.shape)}")
        if self.features == "h" and h.shape[2] != self.num_antennas:
            raise LinksimError(f"cnn: built for M={self.num_antennas} antennas, got M={h.shape[2]}")
        b = h.shape[0]
        dev = self.out.weight.device
        h = h.to(device=dev, dtype=torch.complex64)
        ptx = _per_sample(p_tx, b, dev)
        s2 = _per_sample(noise_var, b, dev)
        ms = (h.real.double() ** 2 + h.imag.double() ** 2).mean((-2, -1)).clamp_min(1e-300)
        hn = h / ms.sqrt().to(torch.float32)[:, None, None]
        snr_db = 10.0 * torch.log10((ptx * ms / s2).clamp_min(1e-30))
        snr = ((snr_db - self.snr_ref_db) / self.snr_scale_db).to(torch.float32)[:, None]
        if self.features == "h":
            img = torch.stack([hn.real, hn.imag, hn.abs()], 1)            # [b, 3, K, M]
        else:
            g = hn @ hn.mH / hn.shape[-1]
            img = torch.stack([g.real, g.imag], 1)                          # [b, 2, K, K]
        return img, snr, ptx

    def predict_p_lambda(self, h: torch.Tensor, p_tx, noise_var):
        """Network outputs ``(p [b,K], lam [b,K])`` float32, each positive and summing to ``p_tx``."""
        img, snr, ptx = self._inputs(h, p_tx, noise_var)
        z = self.conv(img).flatten(1)
        z = self.out(self.mlp(torch.cat([z, snr], 1)))
        k = self.num_users
        scale = ptx.to(torch.float32)[:, None]
        return scale * torch.softmax(z[:, :k], -1), scale * torch.softmax(z[:, k:], -1)

    def forward(self, h: torch.Tensor, p_tx, noise_var) -> torch.Tensor:
        p, lam = self.predict_p_lambda(h, p_tx, noise_var)
        return structured_beamformer(h.to(p.device), p, lam, noise_var, p_tx)

    # ---------------------------------------------------------------------------------- training
    def training_loss(self, batch: dict) -> torch.Tensor:
        """One batch's loss (see ``agents.base`` for the keys).

        - ``stage="labels"``: ``mean((p/p_tx - p_ref/sum(p_ref))^2 + ...)``, i.e. the MSE over the
          ``2K`` normalised parameters ``(p/p_tx, lam/p_tx)`` against ``(p_ref/sum(p_ref),
          lam_ref/p_tx)`` (``sum(p_ref) = p_tx`` for WMMSE, which uses full power; normalising by
          the sum makes the label independent of that).
        - ``stage="rate"``: ``-mean(sum_rate(h, w, noise_var))`` in bit/s/Hz (float32 scalar).
        """
        stage = batch.get("stage", "labels")
        h, ptx, s2 = batch["h"], batch["p_tx"], batch["noise_var"]
        if stage == "labels":
            p, lam = self.predict_p_lambda(h, ptx, s2)
            b = p.shape[0]
            pt = _per_sample(ptx, b, p.device).to(torch.float32)[:, None]
            p_ref = batch["p_ref"].to(device=p.device, dtype=torch.float32)
            lam_ref = batch["lam_ref"].to(device=p.device, dtype=torch.float32)
            p_tgt = p_ref / p_ref.sum(-1, keepdim=True).clamp_min(1e-30)
            pred = torch.cat([p / pt, lam / pt], -1)
            tgt = torch.cat([p_tgt, lam_ref / pt], -1)
            return torch.mean((pred - tgt) ** 2)
        if stage == "rate":
            w = self(h, ptx, s2)
            return -sum_rate(h.to(w.device), w, s2).mean().to(torch.float32)
        raise LinksimError(f"cnn: unknown training stage {stage!r} (use 'labels' or 'rate')")

