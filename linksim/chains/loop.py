"""In-the-loop chain: noisy history -> predictor -> precoder on predicted CSI -> rate on the true
future channel. A block is ``PREDICTOR+PRECODER`` (e.g. ``ar+wmmse``; ``genie+wmmse`` is the
perfect-CSI upper reference)."""
from __future__ import annotations

import math

import torch

from ..metrics import NMSE, Mean
from .base import Chain, Point
from .precoding import downlink, rate_of
from .prediction import predict, prediction_batch, update_nmse


class LoopBlock(torch.nn.Module):
    """A predictor and a precoder used together (block kind ``loop``)."""

    kind = "loop"

    def __init__(self, predictor, precoder):
        super().__init__()
        self.predictor = predictor
        self.precoder = precoder


class LoopChain(Chain):
    """Sum-rate on the true channel at each of the P future steps (mean over steps per drop), plus
    the predictor's NMSE. Users: ``precoding.num_users``; history, horizon, noise: ``[prediction]``."""

    task = "loop"
    kind = "loop"
    section = "prediction"
    x_names = ("speed_kmh", "snr_db", "tx_power_dbw", "num_users")
    default_x = "speed_kmh"

    def current(self, x_name):
        if x_name in ("tx_power_dbw", "num_users"):
            return getattr(self.scenario.precoding, x_name)
        return super().current(x_name)

    def apply(self, x_name, x):
        if x_name in ("tx_power_dbw", "num_users"):
            value = int(x) if x_name == "num_users" else float(x)
            return self.scenario.replace(precoding={x_name: value})
        return super().apply(x_name, x)

    def batches(self, point: Point):
        sc = point.scenario
        cp, pre = sc.prediction, sc.precoding
        batch = sc.run.batch_size
        p_tx, noise_var = 10 ** (pre.tx_power_dbw / 10), 10 ** (pre.noise_power_dbw / 10)
        for i in range(math.ceil(cp.num_samples / batch)):
            b = min(batch, cp.num_samples - i * batch)
            h = self.channels(point, i, b, pre.num_users, cp.history + cp.horizon)
            out = prediction_batch(h, cp.history, 10 ** (-cp.snr_db / 10), self.noise_generator(point, i))
            yield out | {"p_tx": p_tx, "noise_var": noise_var, "subcarriers": pre.subcarriers}

    @staticmethod
    def new_metrics():
        return {"sum_rate": Mean(), "nmse_db": NMSE()}

    @staticmethod
    def measure(blk, batch, acc):
        hist, fut, b = batch["hist"], batch["future"], batch["drops"]
        h_hat = predict(blk.predictor, hist, fut)
        update_nmse(acc["nmse_db"], h_hat, fut)
        sub = batch["subcarriers"]
        rates = torch.stack([
            rate_of(blk.precoder, downlink(h_hat, t, sub), downlink(fut, t, sub), batch["p_tx"],
                    batch["noise_var"]).reshape(b, -1).mean(1)
            for t in range(fut.shape[1])])
        acc["sum_rate"].update(rates.mean(0))
