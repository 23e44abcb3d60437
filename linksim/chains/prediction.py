"""Channel prediction chain: noisy history H[:, :L] -> predictor -> H_hat[:, L:L+P], NMSE in dB."""
from __future__ import annotations

import math

from ..metrics import NMSE
from ..registry import REFERENCE
from .base import Chain, Point, complex_noise


def noisy_history(h_hist, snr_db: float, gen):
    """History plus CN(0, 10^(-snr/10)) noise per entry (the channel has unit gain per entry)."""
    return h_hist + complex_noise(h_hist.shape, 10 ** (-snr_db / 10), gen)


def predict(block, hist, future):
    """Run a predictor; a reference block (the genie) is also handed the true future."""
    return block(hist, future) if block.kind == REFERENCE else block(hist)


class PredictionChain(Chain):
    """NMSE of the P predicted samples vs the true ones, over speed or history SNR.

    One sample = one drop (K users x M antennas x F subcarriers x P steps); NMSE is the ratio of
    the summed squared errors to the summed channel power over all drops of a point.
    """

    task = "prediction"
    kind = "predictor"
    section = "prediction"
    x_names = ("speed_kmh", "snr_db", "num_users")
    default_x = "speed_kmh"

    def run_point(self, blocks, point: Point, progress=None):
        cfg = point.scenario.prediction
        batch = point.scenario.run.batch_size
        acc = {label: {"nmse_db": NMSE()} for label in blocks}
        for i in range(math.ceil(cfg.num_samples / batch)):
            b = min(batch, cfg.num_samples - i * batch)
            h = self.channels(point, i, b, cfg.num_users, cfg.history + cfg.horizon)
            hist = noisy_history(h[:, :cfg.history], cfg.snr_db, self.noise_generator(point, i))
            fut = h[:, cfg.history:]
            power = fut.abs().square().sum(dim=(1, 2, 3, 4))
            for label, block in blocks.items():
                h_hat = predict(block, hist, fut)
                acc[label]["nmse_db"].update((h_hat - fut).abs().square().sum(dim=(1, 2, 3, 4)), power)
            if progress:
                progress(b)
        return acc
