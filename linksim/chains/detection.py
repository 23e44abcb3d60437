"""Uplink detection chain: QAM symbols on every OFDM resource element, y = H x + n, detector,
hard decisions -> SER, BER and the NMSE of the symbol estimates."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..blocks.qam import hard_decision, random_symbols, symbols_to_bits
from ..config import derive_seed, generator
from ..errors import LinksimError
from ..metrics import NMSE, ErrorRate
from ..registry import register_task
from ..scenario import register_section, setting
from .base import Chain, Point, complex_noise, finite, uniform


@register_section("detection", hash_defaults=True)
@dataclass
class Detection:
    """``[detection]``: uplink detection of QAM symbols on OFDM resource elements, and when a
    point stops (Sionna's ``sim_ber`` rule per block)."""

    num_users: int = setting(4, lambda v: v > 0, "must be > 0")
    bits_per_symbol: int = setting(4, lambda v: v in (2, 4, 6, 8), "must be 2, 4, 6 or 8 (QPSK..256-QAM)")
    symbols_per_sample: int = setting(6, lambda v: v > 0, "must be > 0")
    snr_db: float = setting(10.0)
    target_errors: int = setting(200, lambda v: v > 0, "must be > 0")
    min_samples: int = setting(64, lambda v: v > 0, "must be > 0")
    max_samples: int = setting(2048, lambda v: v > 0, "must be > 0")

    def validate(self, path, scenario):
        if self.min_samples > self.max_samples:
            raise LinksimError(f"{path}: detection.min_samples ({self.min_samples}) > max_samples "
                               f"({self.max_samples})")


def uplink(h: torch.Tensor) -> torch.Tensor:
    """Uplink matrices ``[b*F, M, K]`` (one per subcarrier) from ``H [b, 1, K, M, F]``."""
    b, _, k, m, f = h.shape
    return h[:, 0].permute(0, 3, 2, 1).reshape(b * f, m, k)


def detection_batch(h: torch.Tensor, noise_var, num_slots: int, bits_per_symbol: int,
                    gen: torch.Generator, drops: int | None = None) -> dict:
    r"""Inputs and truth of detection: :math:`y = H x + n`, ``x`` i.i.d. uniform QAM, ``n ~ CN(0, noise_var I)``.

    :param h: [n, M, K], complex. Uplink matrices (one per resource block).
    :param noise_var: float or [n] tensor. Noise variance per receive antenna.
    :param num_slots: T, symbol slots sharing each ``h``.
    :param bits_per_symbol: bits per QAM symbol.
    :param gen: generator of the symbols, then the noise (on ``h``'s device).
    :param drops: independent samples in the batch (``n`` rows are grouped into ``drops`` for the
        NMSE interval; default ``n``).
    :output batch: dict with ``y [n,M,T]``, ``h``, ``noise_var``, ``x [n,K,T]``, ``idx [n,K,T]``
        int64, ``bits [n,K,T,bits]``, ``bits_per_symbol``, ``drops``.
    """
    n, m, k = h.shape
    idx, x = random_symbols((n, k, num_slots), bits_per_symbol, gen, dtype=h.dtype)
    y = h @ x + complex_noise((n, m, num_slots), noise_var, gen, h.dtype)
    return {"y": y, "h": h, "noise_var": noise_var, "x": x, "idx": idx,
            "bits": symbols_to_bits(idx, bits_per_symbol), "bits_per_symbol": bits_per_symbol,
            "drops": n if drops is None else drops}


@register_task("detection", "detector")
class DetectionChain(Chain):
    """SER/BER/NMSE over SNR. One sample = one drop: F subcarriers x T slots x K users symbols.

    Each block stops at a point once it has ``target_errors`` symbol errors and ``min_samples``
    drops have run, or at ``max_samples`` drops (Sionna's sim_ber rule, per block). All blocks of a
    point see the same drops, symbols and noise in the same order, so their error counts are
    paired: a block that stopped early counted the first drops of the others.
    """

    section = "detection"
    x_names = ("snr_db", "num_users", "speed_kmh")
    default_x = "snr_db"
    must_match = ("num_bs_antennas", "num_users", "bits_per_symbol")
    references = ("lmmse",)
    val_metric = "ser"
    loss_weight = 5.0
    prompt = (
        "[signal detection]",
        "{users} single-antenna users send {modulation} symbols over a shared channel to a base station "
        "with {antennas} receive antennas; each sample holds {slots} symbol slots.",
        "Recover every user's transmitted symbols from the received signals and the channel.",
    )

    def budget(self, point):
        return point.scenario.detection.max_samples

    def batches(self, point: Point):
        cfg = point.scenario.detection
        batch = point.scenario.run.batch_size
        noise_var = 10 ** (-cfg.snr_db / 10)
        drops, i = 0, 0
        while drops < cfg.max_samples:
            b = min(batch, cfg.max_samples - drops)
            h = uplink(self.channels(point, i, b, cfg.num_users, 1))       # [bF, M, K]
            yield detection_batch(h, noise_var, cfg.symbols_per_sample, cfg.bits_per_symbol,
                                  self.noise_generator(point, i), drops=b)
            drops += b
            i += 1

    @staticmethod
    def new_metrics(block=None):
        return {"ser": ErrorRate(), "ber": ErrorRate(), "nmse_db": NMSE()}

    @staticmethod
    def measure(block, batch, acc):
        nb, x, idx = batch["bits_per_symbol"], batch["x"], batch["idx"]
        x_hat = finite(block(batch["y"], batch["h"], batch["noise_var"]))
        idx_hat, _ = hard_decision(x_hat, nb)
        acc["ser"].update((idx_hat != idx).sum(), idx.numel())
        acc["ber"].update((symbols_to_bits(idx_hat, nb) != batch["bits"]).sum(), batch["bits"].numel())
        b = batch["drops"]
        err = (x_hat - x).abs().square().reshape(b, -1).sum(1)
        acc["nmse_db"].update(err, x.abs().square().reshape(b, -1).sum(1))

    def done(self, acc, drops):
        cfg = self.scenario.detection
        return drops >= cfg.min_samples and acc["ser"].errors >= cfg.target_errors

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def score(cls, metrics):
        """``10 log10 SER`` (floored at 1e-6: a validation without errors)."""
        return 10 * math.log10(max(float(metrics["val_ser"]), 1e-6))

    def train_samples(self, pool, layout, seed):
        """``[N*F, M, K]`` uplink matrices, one per drop and subcarrier."""
        return uplink(pool).contiguous()

    def train_batch(self, samples, size, gen, train, stage, users=None):
        """Symbols and noise at an SNR uniform in ``train.snr_db`` per sample."""
        s = samples[torch.randint(0, len(samples), (size,), generator=gen)]
        d = self.scenario.detection
        nv = 10 ** (-uniform(train.snr_db, size, gen) / 10)
        return detection_batch(s, nv, d.symbols_per_sample, d.bits_per_symbol, gen)

    def val_batches(self, pool, samples, size, seed, train, max_batches):
        """``size`` matrices per batch in pool order, SNR uniform in ``train.snr_db`` per sample
        from a fixed seed."""
        d = self.scenario.detection
        out = []
        for i, lo in enumerate(range(0, min(len(samples), size * max_batches), size)):
            gen = generator(derive_seed(seed, "val", i))
            s = samples[lo:lo + size]
            nv = 10 ** (-uniform(train.snr_db, s.shape[0], gen) / 10)
            out.append(detection_batch(s, nv, d.symbols_per_sample, d.bits_per_symbol, gen))
        return out

