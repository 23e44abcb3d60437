"""LOS/NLOS identification per user: each user's LOS state drawn by the TR 38.901 probability of
its distance, a block tells LOS from NLOS from its modalities -> accuracy and F1 (LOS the positive
class)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..metrics import F1, ErrorRate
from ..registry import register_task
from ..scenario import register_section, setting
from .sensing import SensingChain, call, gnss_setting, modalities_setting, snr_setting, zeroed_setting


@register_section("los")
@dataclass
class Los:
    """``[los]``: LOS/NLOS identification; users' states always by the 3GPP LOS probability
    (whatever ``[channel] los`` says: a forced state leaves one class)."""

    num_users: int = setting(4, lambda v: 0 < v <= 64, "must be in 1..64")
    snr_db: float = snr_setting()
    gnss_std_m: float = gnss_setting()
    modalities: str = modalities_setting("csi")
    zeroed: str = zeroed_setting()
    num_samples: int = setting(256, lambda v: v > 0, "must be > 0")


@register_task("los", "los_classifier")
class LosChain(SensingChain):
    """LOS/NLOS identification: accuracy and F1 of each user's LOS decision.

    One sample = one user of one drop; the block outputs a LOS probability per user and decides
    LOS when it exceeds 0.5. ``accuracy`` = correct decisions / users (Clopper-Pearson interval);
    ``f1`` = 2TP / (2TP + FP + FN) with LOS the positive class (delta-method interval).
    """

    section = "los"
    force_los = "random"
    references = ("kfactor",)
    val_metric = "accuracy"
    prompt = (
        "[los identification]",
        "A base station with {antennas} antennas on {subcarriers} OFDM subcarriers hears {users} "
        "single-antenna users, each in line of sight or not.",
        "Tell for each user whether its channel has a line-of-sight path.",
    )

    def labels(self, h, info, sc):
        return {"truth": info["los"]}

    @staticmethod
    def new_metrics(block=None):
        return {"accuracy": ErrorRate(), "f1": F1()}

    @staticmethod
    def measure(block, batch, acc):
        pred = call(block, batch) > 0.5
        truth = batch["truth"]
        acc["accuracy"].update((pred == truth).sum(), truth.numel())
        acc["f1"].update(pred, truth)

    @classmethod
    def score(cls, metrics):
        """``10 log10`` of the error rate ``1 - accuracy`` (floored at 1e-6)."""
        return 10 * math.log10(max(1 - float(metrics["val_accuracy"]), 1e-6))
