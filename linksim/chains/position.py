"""Positioning: each user's horizontal position relative to the BS [m] from uplink CSI and the
other modalities -> mean and 90th-percentile error in metres."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..metrics import Mean, Quantile
from ..registry import register_task
from ..scenario import register_section, setting
from .sensing import SensingChain, call, gnss_setting, los_setting, modalities_setting, snr_setting, zeroed_setting


@register_section("position")
@dataclass
class Position:
    """``[position]``: 2-D user positions from the listed modalities."""

    num_users: int = setting(4, lambda v: 0 < v <= 64, "must be in 1..64")
    snr_db: float = snr_setting()
    gnss_std_m: float = gnss_setting(10.0)
    modalities: str = modalities_setting("csi,rsrp,gnss")
    zeroed: str = zeroed_setting()
    los: str = los_setting()
    num_samples: int = setting(256, lambda v: v > 0, "must be > 0")


@register_task("position", "positioner")
class PositionChain(SensingChain):
    """Positioning: ``pos_err_m`` (mean Euclidean error, normal interval) and ``pos_err_p90_m``
    (its 90th percentile, order-statistic interval) over users.

    One sample = one user of one drop; the truth is the UT's horizontal position minus the BS's
    at the drop's first time sample.
    """

    section = "position"
    references = ("knn",)
    val_metric = "pos_err_m"
    prompt = (
        "[positioning]",
        "A base station with {antennas} antennas on {subcarriers} OFDM subcarriers hears {users} "
        "single-antenna users in its sector.",
        "Estimate each user's horizontal position relative to the base station in metres.",
    )

    def labels(self, h, info, sc):
        return {"truth": info["position"]}

    @staticmethod
    def new_metrics(block=None):
        return {"pos_err_m": Mean(), "pos_err_p90_m": Quantile(0.9)}

    @staticmethod
    def measure(block, batch, acc):
        err = (call(block, batch) - batch["truth"]).norm(dim=-1)
        acc["pos_err_m"].update(err)
        acc["pos_err_p90_m"].update(err)

    @classmethod
    def score(cls, metrics):
        """``20 log10`` of the mean error in metres (lower is better)."""
        return 20 * math.log10(max(float(metrics["val_pos_err_m"]), 1e-6))
