"""Large-scale gain estimation: each user's path loss + shadowing in dB (TR 38.901, the truth
Sionna drew with the drop), from beam RSRP, a GNSS report or the CSI -> RMSE in dB."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..metrics import RMSE
from ..registry import register_task
from ..scenario import register_section, setting
from .sensing import SensingChain, call, gnss_setting, los_setting, modalities_setting, snr_setting, zeroed_setting


@register_section("pathloss")
@dataclass
class Pathloss:
    """``[pathloss]``: estimate ``G = -PL + SF`` [dB] per user."""

    num_users: int = setting(4, lambda v: 0 < v <= 64, "must be in 1..64")
    snr_db: float = snr_setting()
    gnss_std_m: float = gnss_setting(5.0)
    modalities: str = modalities_setting("gnss,rsrp")
    zeroed: str = zeroed_setting()
    los: str = los_setting()
    num_samples: int = setting(256, lambda v: v > 0, "must be > 0")


@register_task("pathloss", "pathloss_estimator")
class PathlossChain(SensingChain):
    """Large-scale gain: RMSE in dB of each user's estimated ``G = -PL + SF``.

    One sample = one user of one drop; the label is Sionna's basic TR 38.901 path loss (LOS or
    NLOS by the user's state) and shadow fading of the drop (:meth:`ChannelSource.sample_with_info`).
    ``rmse_db`` = sqrt(mean (G_hat - G)^2) with the interval of the mean square mapped through
    the square root.
    """

    section = "pathloss"
    references = ("uma_formula",)
    val_metric = "rmse_db"
    prompt = (
        "[path loss]",
        "A base station with {antennas} antennas hears {users} single-antenna users in an urban "
        "macro cell on {subcarriers} OFDM subcarriers.",
        "Estimate each user's large-scale channel gain (path loss and shadowing) in dB.",
    )

    def labels(self, h, info, sc):
        return {"truth": info["gain_db"]}

    @staticmethod
    def new_metrics(block=None):
        return {"rmse_db": RMSE()}

    @staticmethod
    def measure(block, batch, acc):
        acc["rmse_db"].update(call(block, batch) - batch["truth"])

    @classmethod
    def score(cls, metrics):
        """``20 log10`` of the RMSE (dB of an error, lower is better)."""
        return 20 * math.log10(max(float(metrics["val_rmse_db"]), 1e-6))
