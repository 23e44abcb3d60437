"""Channel prediction chain: noisy history H[:, :L] -> predictor -> H_hat[:, L:L+P], NMSE in dB."""
from __future__ import annotations

import math

import torch

from ..metrics import NMSE
from ..registry import REFERENCE
from .base import Chain, Point, complex_noise, finite


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


class PredictionChain(Chain):
    """NMSE of the P predicted samples vs the true ones, over speed or history SNR.

    One sample = one drop (K users x M antennas x F subcarriers x P steps); NMSE is the ratio of
    the summed squared errors to the summed channel power over all drops of a point.
    ``nmse_db`` is against the clean future; ``nmse_noisy_db`` against the future with the history's
    noise added (LLM4CP's test convention: its floor is the history SNR).
    """

    task = "prediction"
    kind = "predictor"
    section = "prediction"
    x_names = ("speed_kmh", "snr_db", "num_users")
    default_x = "speed_kmh"

    def batches(self, point: Point):
        cfg = point.scenario.prediction
        batch = point.scenario.run.batch_size
        for i in range(math.ceil(cfg.num_samples / batch)):
            b = min(batch, cfg.num_samples - i * batch)
            h = self.channels(point, i, b, cfg.num_users, cfg.history + cfg.horizon)
            yield prediction_batch(h, cfg.history, 10 ** (-cfg.snr_db / 10), self.noise_generator(point, i))

    @staticmethod
    def new_metrics():
        return {"nmse_db": NMSE(), "nmse_noisy_db": NMSE()}

    @staticmethod
    def measure(block, batch, acc):
        fut = batch["future"]
        h_hat = predict(block, batch["hist"], fut)
        update_nmse(acc["nmse_db"], h_hat, fut)
        update_nmse(acc["nmse_noisy_db"], h_hat, batch["future_noisy"])
