"""Channel prediction chain: noisy history H[:, :L] -> predictor -> H_hat[:, L:L+P], NMSE in dB."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import derive_seed, generator
from ..metrics import NMSE
from ..registry import REFERENCE, register_task
from ..scenario import register_section, setting
from .base import Chain, Point, complex_noise, finite, uniform

#: prediction training: antennas kept per user and drop in the per-antenna layout (bounds memory)
MAX_SERIES_ANTENNAS = 16


@register_section("prediction", hash_defaults=True)
@dataclass
class Prediction:
    """``[prediction]``: ``history`` past samples -> ``horizon`` future samples."""

    num_users: int = setting(4, lambda v: v > 0, "must be > 0")
    history: int = setting(16, lambda v: v > 0, "must be > 0")
    horizon: int = setting(4, lambda v: v > 0, "must be > 0")
    snr_db: float = setting(20.0, why="history noise SNR [dB]")
    num_samples: int = setting(256, lambda v: v > 0, "must be > 0")


def noisy_history(h_hist: torch.Tensor, noise_var, gen: torch.Generator) -> torch.Tensor:
    """History plus CN(0, noise_var) noise per entry (the channel has unit gain per entry);
    ``noise_var`` a float or a ``[b]`` tensor (one SNR per drop)."""
    return h_hist + complex_noise(h_hist.shape, noise_var, gen, h_hist.dtype)


def prediction_batch(h: torch.Tensor, history: int, noise_var, gen: torch.Generator) -> dict:
    """Inputs and truth of prediction from drops ``h [b, L+P, ...]``: ``hist [b,L,...]`` (noisy),
    ``future [b,P,...]`` (clean), ``future_noisy`` (with the history's noise level: LLM4CP's test
    target, drawn after the history's noise), ``drops = b``."""
    hist = noisy_history(h[:, :history], noise_var, gen)
    future = h[:, history:]
    return {"hist": hist, "future": future, "future_noisy": noisy_history(future, noise_var, gen),
            "drops": h.shape[0]}


def predict(block, hist: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
    """Run a predictor; a reference block (the genie) is also handed the true future."""
    return finite(block(hist, future) if block.kind == REFERENCE else block(hist))


def update_nmse(acc: NMSE, h_hat: torch.Tensor, future: torch.Tensor) -> None:
    """Add each drop's squared error and power (summed over all but the first dim) to ``acc``."""
    dims = tuple(range(1, future.dim()))
    acc.update((h_hat - future).abs().square().sum(dim=dims), future.abs().square().sum(dim=dims))


@register_task("prediction", "predictor")
class PredictionChain(Chain):
    """NMSE of the P predicted samples vs the true ones, over speed or history SNR.

    One sample = one drop (K users x M antennas x F subcarriers x P steps); NMSE is the ratio of
    the summed squared errors to the summed channel power over all drops of a point.
    ``nmse_db`` is against the clean future; ``nmse_noisy_db`` against the future with the history's
    noise added (LLM4CP's test convention: its floor is the history SNR).
    """

    section = "prediction"
    x_names = ("speed_kmh", "snr_db", "num_users")
    default_x = "speed_kmh"
    must_match = ("num_subcarriers", "history", "horizon")     # per-antenna series: any M and K
    references = ("outdated", "ar")
    val_metric = "nmse_db"
    loss_weight = 1.0
    prompt = (
        "[channel prediction]",
        "A base station with {antennas} antennas tracks the channels of moving single-antenna users "
        "on {subcarriers} OFDM subcarriers, with one channel sample every {spacing_ms:g} ms. "
        "The history is measured with noise.",
        "Predict the next {horizon} channel samples from the past {history} noisy samples.",
    )

    @classmethod
    def num_time(cls, sc):
        return sc.prediction.history + sc.prediction.horizon

    def batches(self, point: Point):
        cfg = point.scenario.prediction
        batch = point.scenario.run.batch_size
        for i in range(math.ceil(cfg.num_samples / batch)):
            b = min(batch, cfg.num_samples - i * batch)
            h = self.channels(point, i, b, cfg.num_users, cfg.history + cfg.horizon)
            yield prediction_batch(h, cfg.history, 10 ** (-cfg.snr_db / 10), self.noise_generator(point, i))

    @staticmethod
    def new_metrics(block=None):
        return {"nmse_db": NMSE(), "nmse_noisy_db": NMSE()}

    @staticmethod
    def measure(block, batch, acc):
        fut = batch["future"]
        h_hat = predict(block, batch["hist"], fut)
        update_nmse(acc["nmse_db"], h_hat, fut)
        update_nmse(acc["nmse_noisy_db"], h_hat, batch["future_noisy"])

    # -- training ---------------------------------------------------------------------------
    def train_samples(self, pool, layout, seed):
        """``"user"``: ``[N*K, L+P, M, F]`` (all antennas of a user); ``"antenna"`` (default):
        ``[N*K*M', L+P, F]``, one BS antenna's series each (at most :data:`MAX_SERIES_ANTENNAS`
        antennas per user, drawn once from ``seed``)."""
        if layout == "user":
            s = pool.transpose(1, 2)
            return s.reshape(-1, *s.shape[2:]).contiguous()
        g = generator(derive_seed(seed, "antennas"))
        m = pool.shape[3]
        keep = torch.randperm(m, generator=g)[:min(m, MAX_SERIES_ANTENNAS)]
        s = pool[:, :, :, keep]                                  # [N, T, K, M', F]
        return s.permute(0, 2, 3, 1, 4).reshape(-1, s.shape[1], s.shape[4]).contiguous()

    def train_batch(self, samples, size, gen, train, stage, users=None):
        """``hist [B, L, ...]`` (noise at an SNR uniform in ``train.snr_db`` per sample),
        ``future [B, P, ...]``."""
        s = samples[torch.randint(0, len(samples), (size,), generator=gen)]
        L = self.scenario.prediction.history
        nv = 10 ** (-uniform(train.snr_db, size, gen) / 10)
        return {"hist": noisy_history(s[:, :L], nv, gen), "future": s[:, L:]}

    def val_batches(self, pool, samples, size, seed, train, max_batches):
        """Whole drops of the pool, ``run.batch_size`` per batch, the history SNR uniform in
        ``train.snr_db`` per drop from a fixed seed."""
        per = self.scenario.run.batch_size
        out = []
        for i, lo in enumerate(range(0, min(len(pool), per * max_batches), per)):
            gen = generator(derive_seed(seed, "val", i))
            h = pool[lo:lo + per]
            nv = 10 ** (-uniform(train.snr_db, h.shape[0], gen) / 10)
            out.append(prediction_batch(h, self.scenario.prediction.history, nv, gen))
        return out

