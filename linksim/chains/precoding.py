"""Precoding chain: H at the centre subcarrier (or every subcarrier) -> precoder -> sum-rate."""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import torch

from ..blocks.precoders import sum_rate, wmmse_p_lambda
from ..config import derive_seed, generator
from ..metrics import Mean
from ..registry import REFERENCE, register_task
from ..scenario import register_section, setting
from .base import Chain, Point, finite, uniform


@register_section("precoding", hash_defaults=True)
@dataclass
class Precoding:
    """``[precoding]``: downlink multi-user precoding at one subcarrier (or averaged over all)."""

    num_users: int = setting(4, lambda v: v > 0, "must be > 0")
    tx_power_dbw: float = setting(0.0)
    noise_power_dbw: float = setting(-10.0)
    subcarriers: str = setting("centre", choices=("centre", "all"))
    num_samples: int = setting(256, lambda v: v > 0, "must be > 0")


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


@register_task("precoding", "precoder")
class PrecodingChain(Chain):
    """Sum-rate from per-user SINR, averaged per drop (over subcarriers when ``subcarriers = "all"``).

    Training batches (:meth:`train_batch`) add ``stage`` and, in the ``"labels"`` stage, WMMSE's
    structure parameters ``p_ref``, ``lam_ref`` (:func:`~linksim.blocks.precoders.wmmse_p_lambda`).
    """

    section = "precoding"
    x_names = ("tx_power_dbw", "snr_db", "num_users", "speed_kmh")
    default_x = "tx_power_dbw"
    must_match = ("num_bs_antennas", "num_users")
    references = ("wmmse",)
    val_metric = "sum_rate"
    loss_weight = 0.2
    prompt = (
        "[multi-user precoding]",
        "A base station with {antennas} antennas serves {users} single-antenna users at the same time "
        "with linear precoding under a total transmit power budget.",
        "Design the precoder from the users' channels so that the sum rate of all users is maximal.",
    )

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
    def new_metrics(block=None):
        return {"sum_rate": Mean()}

    @staticmethod
    def measure(block, batch, acc):
        r = rate_of(block, batch["h"], batch["h"], batch["p_tx"], batch["noise_var"])
        acc["sum_rate"].update(r.reshape(batch["drops"], -1).mean(1))

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def score(cls, metrics):
        """``-10 log10`` of the sum-rate (a 1% higher rate scores 0.043 dB lower); a model of a
        range of K (validated per K: ``val_rate_ratio_k<K>``, its rate over WMMSE's on the same
        drops) scores the mean over K of ``-10 log10`` of that ratio, so that every K counts alike
        (raw rates grow with K) and a K it has not learned holds the score back."""
        ratios = [float(v) for k, v in metrics.items() if re.fullmatch(r"val_rate_ratio_k\d+", k)]
        if ratios:
            return sum(-10 * math.log10(max(r, 1e-12)) for r in ratios) / len(ratios)
        return -10 * math.log10(max(float(metrics["val_sum_rate"]), 1e-12))

    def train_samples(self, pool, layout, seed):
        """``[N*F, K, M]`` downlink matrices, one per drop and subcarrier."""
        b, _, k, m, f = pool.shape
        return pool[:, 0].permute(0, 3, 1, 2).reshape(b * f, k, m).contiguous()

    def train_batch(self, samples, size, gen, train, stage, users=None):
        """Power uniform in ``train.tx_power_dbw`` per sample, the scenario's noise; with
        ``users``, K uniform in the range per batch (a random subset of the pool's K_max).

        In the label stage of a model of one K, the WMMSE labels are computed once per set of
        samples (:meth:`_labelled`: a draw of fresh drops that ``train.drops_reuse`` steps share,
        or the pool), each sample with its own power, and a step draws ``size`` labelled samples:
        WMMSE (0.5 ms a sample) costs once per draw instead of once per step."""
        if stage == "labels" and not users:
            h, p_tx, p, lam = self._labelled(samples, train)
            idx = torch.randint(0, len(h), (size,), generator=gen)
            nv = torch.full((size,), 10 ** (self.scenario.precoding.noise_power_dbw / 10))
            return precoding_batch(h[idx], p_tx[idx], nv) | {"stage": stage, "p_ref": p[idx], "lam_ref": lam[idx]}
        s = samples[torch.randint(0, len(samples), (size,), generator=gen)]
        if users:
            k = int(torch.randint(users[0], users[1] + 1, (1,), generator=gen))
            s = s[:, torch.randperm(s.shape[1], generator=gen)[:k]]
        p_tx = 10 ** (uniform(train.tx_power_dbw, size, gen) / 10)
        nv = torch.full((size,), 10 ** (self.scenario.precoding.noise_power_dbw / 10))
        out = precoding_batch(s, p_tx, nv) | {"stage": stage}
        if stage == "labels":
            with torch.no_grad():
                p, lam = wmmse_p_lambda(s, self._wmmse()(s, p_tx, nv), nv, p_tx)
            out.update(p_ref=p.float(), lam_ref=lam.float())
        return out

    def _labelled(self, samples, train):
        """``(h, p_tx, p_ref, lam_ref)`` of every sample of ``samples``: a power per sample drawn
        from a seed of their content (so a resumed run labels a draw as the first did), WMMSE's
        structure parameters at it; kept while the same samples come back."""
        cached = getattr(self, "_labels", None)
        if cached is None or cached[0] is not samples:
            digest = hashlib.sha256(samples[:, 0, 0].to(torch.complex64).cpu().numpy().tobytes()).hexdigest()
            gen = generator(derive_seed(digest[:16], "labels"))
            p_tx = 10 ** (uniform(train.tx_power_dbw, len(samples), gen) / 10)
            nv = torch.full((len(samples),), 10 ** (self.scenario.precoding.noise_power_dbw / 10))
            with torch.no_grad():
                p, lam = wmmse_p_lambda(samples, self._wmmse()(samples, p_tx, nv), nv, p_tx)
            self._labels = (samples, p_tx, p.float(), lam.float())
        return (samples,) + self._labels[1:]

    def _wmmse(self):
        if not hasattr(self, "_wmmse_block"):
            from ..blocks import get
            self._wmmse_block = get("wmmse")
        return self._wmmse_block

    def val_batches(self, pool, samples, size, seed, train, max_batches):
        """``size`` matrices per batch in pool order, the scenario's K (a K-range pool holds
        K_max), power uniform in ``train.tx_power_dbw`` per sample from a fixed seed."""
        out = []
        for i, lo in enumerate(range(0, min(len(samples), size * max_batches), size)):
            gen = generator(derive_seed(seed, "val", i))
            s = samples[lo:lo + size][:, :self.scenario.precoding.num_users]
            p_tx = 10 ** (uniform(train.tx_power_dbw, s.shape[0], gen) / 10)
            nv = torch.full((s.shape[0],), 10 ** (self.scenario.precoding.noise_power_dbw / 10))
            out.append(precoding_batch(s, p_tx, nv))
        return out

    @staticmethod
    def summary(metrics):
        """``val_rate_ratio``: the trained block's sum-rate over WMMSE's."""
        return {"val_rate_ratio": metrics["val_sum_rate"] / metrics["val_sum_rate_wmmse"]}

