"""Training data: a channel pool drawn once from ChannelSource (cached as HDF5 in the agent's
``.cache/``), turned into task samples; symbols, noise, SNRs and powers are drawn fresh per step.

Every batch is a function of ``(seed, step)`` only (see :func:`linksim.config.derive_seed`), so a
resumed run draws exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..agents.base import Dims
from ..blocks import get as get_block
from ..blocks.precoders import wmmse_p_lambda
from ..chains.detection import detection_batch, uplink
from ..chains.precoding import precoding_batch
from ..chains.prediction import noisy_history, prediction_batch
from ..config import derive_seed, generator
from ..scenario import Scenario

MAX_SERIES_ANTENNAS = 16   # prediction: antennas kept per user and drop (bounds the pool's memory)


def channel_pool(sc: Scenario, task: str, n: int, seed: int, speed_kmh, cache: Path,
                 progress: bool = True) -> torch.Tensor:
    """``n`` drops ``[n, T, K, M, F]`` for ``task`` (T = L + P for prediction, else 1)."""
    import h5py

    from ..channel.dataset import export_dataset

    speed = tuple(speed_kmh) if task == "prediction" else sc.channel.speed_kmh
    name = f"{task}-{derive_seed(sc.hash, task, n, seed, speed):08x}.h5"
    path = cache / name
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        export_dataset(sc, task, n, path, speed_kmh=speed, seed=seed, progress=progress)
    with h5py.File(path) as f:
        return torch.from_numpy(f["h"][:])


def dataset_pool(path: str | Path, sc: Scenario, task: str) -> torch.Tensor:
    """The channels of an exported dataset (``linksim dataset``), checked against ``sc`` and ``task``."""
    import h5py

    from ..errors import LinksimError

    p = Path(path)
    if not p.is_file():
        raise LinksimError(f"train.dataset: file not found: {p}")
    with h5py.File(p) as f:
        if "h" not in f:
            raise LinksimError(f"train.dataset: {p} has no dataset 'h' (export it with `linksim dataset`)")
        if f.attrs.get("task") != task:
            raise LinksimError(f"train.dataset: {p} holds {f.attrs.get('task')!r} channels, this agent "
                               f"needs {task!r}")
        if f.attrs.get("scenario_hash") != sc.hash:
            raise LinksimError(f"train.dataset: {p} was exported from another scenario "
                               f"(hash {f.attrs.get('scenario_hash')} != {sc.hash})")
        return torch.from_numpy(f["h"][:])


def _uniform(lo_hi, n, gen) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=gen)


class TaskData:
    """Samples of one task from a channel pool. ``batch(size, seed)`` returns the training batch
    described in :mod:`linksim.agents.base`; :meth:`val_batches` the chain's batches (the same
    builders and layout as a sweep, so validation counts metrics exactly as a sweep does)."""

    def __init__(self, task: str, pool: torch.Tensor, dims: Dims, sc: Scenario, train, seed: int,
                 layout: str = "antenna", users: tuple[int, int] | None = None):
        self.task, self.dims, self.sc, self.train = task, dims, sc, train
        self.pool = pool
        self.users = users            # precoding: K drawn per batch from this range (pool has K_max)
        if task == "detection":       # [N*F, M, K] uplink matrices
            self.samples = uplink(pool).contiguous()
        elif task == "precoding":     # [N*F, K, M] downlink matrices
            b, _, k, m, f = pool.shape
            self.samples = pool[:, 0].permute(0, 3, 1, 2).reshape(b * f, k, m).contiguous()
        elif layout == "user":        # [N*K, L+P, M, F] all antennas of one user
            s = pool.transpose(1, 2)
            self.samples = s.reshape(-1, *s.shape[2:]).contiguous()
        else:                         # [N*K*M', L+P, F] per-antenna series
            g = generator(derive_seed(seed, "antennas"))
            m = pool.shape[3]
            keep = torch.randperm(m, generator=g)[:min(m, MAX_SERIES_ANTENNAS)]
            s = pool[:, :, :, keep]                                  # [N, T, K, M', F]
            self.samples = s.permute(0, 2, 3, 1, 4).reshape(-1, s.shape[1], s.shape[4]).contiguous()
        self._wmmse = get_block("wmmse") if task == "precoding" else None

    def __len__(self) -> int:
        return self.samples.shape[0]

    def batch(self, size: int, seed: int, stage: str = "labels") -> dict:
        gen = generator(seed)
        pick = torch.randint(0, len(self), (size,), generator=gen)
        s = self.samples[pick]
        if self.task == "precoding" and self.users:
            k = int(torch.randint(self.users[0], self.users[1] + 1, (1,), generator=gen))
            s = s[:, torch.randperm(s.shape[1], generator=gen)[:k]]
        if self.task == "detection":
            nv = 10 ** (-_uniform(self.train.snr_db, size, gen) / 10)
            return detection_batch(s, nv, self.dims.symbols_per_sample, self.dims.bits_per_symbol, gen)
        if self.task == "precoding":
            p_tx = 10 ** (_uniform(self.train.tx_power_dbw, size, gen) / 10)
            nv = torch.full((size,), 10 ** (self.sc.precoding.noise_power_dbw / 10))
            out = precoding_batch(s, p_tx, nv) | {"stage": stage}
            if stage == "labels":
                with torch.no_grad():
                    w = self._wmmse(s, p_tx, nv)
                    p, lam = wmmse_p_lambda(s, w, nv, p_tx)
                out.update(p_ref=p.float(), lam_ref=lam.float())
            return out
        L = self.dims.history
        nv = 10 ** (-_uniform(self.train.snr_db, size, gen) / 10)
        return {"hist": noisy_history(s[:, :L], nv, gen), "future": s[:, L:]}

    def val_batches(self, size: int, seed: int, max_batches: int = 8) -> list[dict]:
        """Validation batches in the chain's layout, from the pool in order, with the training
        ranges of SNR / power drawn per sample from a fixed seed: detection and precoding take
        ``size`` resource blocks per batch, prediction ``run.batch_size`` whole drops."""
        out = []
        if self.task == "prediction":
            per = self.sc.run.batch_size
            n = min(len(self.pool), per * max_batches)
            for i, lo in enumerate(range(0, n, per)):
                gen = generator(derive_seed(seed, "val", i))
                h = self.pool[lo:lo + per]
                nv = 10 ** (-_uniform(self.train.snr_db, h.shape[0], gen) / 10)
                out.append(prediction_batch(h, self.dims.history, nv, gen))
            return out
        n = min(len(self), size * max_batches)
        for i, lo in enumerate(range(0, n, size)):
            gen = generator(derive_seed(seed, "val", i))
            s = self.samples[lo:lo + size]
            if self.task == "precoding":
                s = s[:, :self.sc.precoding.num_users]      # a K-range pool: the scenario's K
            if self.task == "detection":
                nv = 10 ** (-_uniform(self.train.snr_db, s.shape[0], gen) / 10)
                out.append(detection_batch(s, nv, self.dims.symbols_per_sample, self.dims.bits_per_symbol, gen))
            else:
                p_tx = 10 ** (_uniform(self.train.tx_power_dbw, s.shape[0], gen) / 10)
                nv = torch.full((s.shape[0],), 10 ** (self.sc.precoding.noise_power_dbw / 10))
                out.append(precoding_batch(s, p_tx, nv))
        return out
