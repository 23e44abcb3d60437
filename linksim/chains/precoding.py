"""Precoding chain: H at the centre subcarrier (or every subcarrier) -> precoder -> sum-rate."""
from __future__ import annotations

import math

import torch

from ..blocks.precoders import sum_rate
from ..metrics import Mean
from ..registry import REFERENCE
from .base import Chain, Point, finite


def downlink(h: torch.Tensor, t: int, subcarriers: str) -> torch.Tensor:
    """Downlink matrices ``[b*F', K, M]`` at time ``t`` from ``H [b, T, K, M, F]``:
    the centre subcarrier (F' = 1) or all of them."""
    ht = h[:, t]                                        # [b, K, M, F]
    if subcarriers == "centre":
        return ht[..., ht.shape[-1] // 2]
    b, k, m, f = ht.shape
    return ht.permute(0, 3, 1, 2).reshape(b * f, k, m)


def rate_of(block, h_design, h_true, p_tx, noise_var) -> torch.Tensor:
    """Sum-rate [bit/s/Hz] ``[n]`` on ``h_true`` of the precoder designed on ``h_design``; a
    reference block (e.g. dpc_bound) is given the true channel and returns its limit itself."""
    if block.kind == REFERENCE:
        return finite(block(h_true, p_tx, noise_var))
    w = finite(block(h_design, p_tx, noise_var))
    return sum_rate(h_true, w, noise_var)


def precoding_batch(h: torch.Tensor, p_tx, noise_var, drops: int | None = None) -> dict:
    """Inputs of precoding: ``h [n,K,M]``, ``p_tx`` and ``noise_var`` (float or ``[n]``); the
    ``n`` rows are grouped into ``drops`` samples (default ``n``)."""
    return {"h": h, "p_tx": p_tx, "noise_var": noise_var, "drops": h.shape[0] if drops is None else drops}


class PrecodingChain(Chain):
    """Sum-rate from per-user SINR, averaged per drop (over subcarriers when ``subcarriers = "all"``)."""

    task = "precoding"
    kind = "precoder"
    section = "precoding"
    x_names = ("tx_power_dbw", "snr_db", "num_users", "speed_kmh")
    default_x = "tx_power_dbw"

    def current(self, x_name):
        if x_name == "snr_db":
            p = self.scenario.precoding
            return p.tx_power_dbw - p.noise_power_dbw
        return super().current(x_name)

    def apply(self, x_name, x):
        if x_name == "snr_db":  # SNR = P / sigma^2: move the noise, keep the power budget
            p = self.scenario.precoding
            return self.scenario.replace(precoding={"noise_power_dbw": p.tx_power_dbw - float(x)})
        return super().apply(x_name, x)

    def batches(self, point: Point):
        cfg = point.scenario.precoding
        batch = point.scenario.run.batch_size
        p_tx, noise_var = 10 ** (cfg.tx_power_dbw / 10), 10 ** (cfg.noise_power_dbw / 10)
        for i in range(math.ceil(cfg.num_samples / batch)):
            b = min(batch, cfg.num_samples - i * batch)
            h = downlink(self.channels(point, i, b, cfg.num_users, 1), 0, cfg.subcarriers)
            yield precoding_batch(h, p_tx, noise_var, drops=b)

    @staticmethod
    def new_metrics():
        return {"sum_rate": Mean()}

    @staticmethod
    def measure(block, batch, acc):
        r = rate_of(block, batch["h"], batch["h"], batch["p_tx"], batch["noise_var"])
        acc["sum_rate"].update(r.reshape(batch["drops"], -1).mean(1))
