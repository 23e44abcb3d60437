"""Uplink detection chain: QAM symbols on every OFDM resource element, y = H x + n, detector,
hard decisions -> SER, BER and the NMSE of the symbol estimates."""
from __future__ import annotations

import torch

from ..blocks.qam import hard_decision, random_symbols, symbols_to_bits
from ..metrics import NMSE, ErrorRate
from .base import Chain, Point, complex_noise


def uplink(h: torch.Tensor) -> torch.Tensor:
    """Uplink matrices ``[b*F, M, K]`` (one per subcarrier) from ``H [b, 1, K, M, F]``."""
    b, _, k, m, f = h.shape
    return h[:, 0].permute(0, 3, 2, 1).reshape(b * f, m, k)


class DetectionChain(Chain):
    """SER/BER/NMSE over SNR. One sample = one drop: F subcarriers x T slots x K users symbols.

    A point stops once every block has ``target_errors`` symbol errors and ``min_samples`` drops
    have run, or at ``max_samples`` drops (as Sionna's sim_ber does). All blocks of a point see the
    same drops, symbols and noise, so their error counts are paired and directly comparable.
    """

    task = "detection"
    kind = "detector"
    section = "detection"
    x_names = ("snr_db", "num_users", "speed_kmh")
    default_x = "snr_db"

    def budget(self, point):
        return point.scenario.detection.max_samples

    def run_point(self, blocks, point: Point, progress=None):
        cfg = point.scenario.detection
        batch = point.scenario.run.batch_size
        noise_var = 10 ** (-cfg.snr_db / 10)
        nb = cfg.bits_per_symbol
        acc = {label: {"ser": ErrorRate(), "ber": ErrorRate(), "nmse_db": NMSE()} for label in blocks}
        drops, i = 0, 0
        while drops < cfg.max_samples:
            b = min(batch, cfg.max_samples - drops)
            h = uplink(self.channels(point, i, b, cfg.num_users, 1))       # [bF, M, K]
            gen = self.noise_generator(point, i)
            idx, x = random_symbols((h.shape[0], cfg.num_users, cfg.symbols_per_sample), nb, gen)
            y = h @ x + complex_noise((h.shape[0], h.shape[1], cfg.symbols_per_sample), noise_var, gen)
            bits = symbols_to_bits(idx, nb)
            for label, block in blocks.items():
                x_hat = block(y, h, noise_var)
                idx_hat, _ = hard_decision(x_hat, nb)
                a = acc[label]
                a["ser"].update((idx_hat != idx).sum(), idx.numel())
                a["ber"].update((symbols_to_bits(idx_hat, nb) != bits).sum(), bits.numel())
                err = (x_hat - x).abs().square().reshape(b, -1).sum(1)
                a["nmse_db"].update(err, x.abs().square().reshape(b, -1).sum(1))
            drops += b
            i += 1
            if progress:
                progress(b)
            if drops >= cfg.min_samples and all(a["ser"].errors >= cfg.target_errors for a in acc.values()):
                break
        return acc
