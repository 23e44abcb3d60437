"""Training data of one task: samples cut from a channel pool by the task's own chain
(:meth:`linksim.chains.Chain.train_samples`), batches drawn by it (:meth:`~linksim.chains.Chain.train_batch`);
symbols, noise, SNRs and powers are drawn fresh per step.

Every batch is a function of ``(seed, step)`` only (see :func:`linksim.config.derive_seed`), so a
resumed run draws exactly the batches an uninterrupted one would. Nothing here names a task.
"""
from __future__ import annotations

import torch

from ..chains import Dims, chain_class
from ..config import generator
from ..scenario import Scenario


class TaskData:
    """Samples of ``task`` from a channel pool ``[N, T, K, M, F]``.

    :meth:`batch` returns the training batch the task's chain builds (keys in
    :mod:`linksim.agents.base`); :meth:`val_batches` the chain's own batches (the same builders
    and layout as a sweep, so validation counts metrics exactly as a sweep does).

    :param task: a trainable task
    :param pool: the channels
    :param dims: the agent's sizes (kept for callers; the chain reads the scenario's)
    :param sc: the agent's scenario
    :param train: the recipe (:class:`~linksim.agents.spec.TrainSpec`: its ranges)
    :param seed: seeds the sample cut (e.g. which antennas a per-antenna layout keeps)
    :param layout: how the architecture wants the samples (``AgentModel.layouts[task]``; ``""``: default)
    :param users: ``(K_min, K_max)``: K drawn per batch (the pool holds K_max users)
    """

    def __init__(self, task: str, pool: torch.Tensor, dims: Dims, sc: Scenario, train, seed: int,
                 layout: str = "", users: tuple[int, int] | None = None):
        self.task, self.dims, self.sc, self.train, self.users = task, dims, sc, train, users
        self.pool = pool
        self.chain = chain_class(task)(sc)
        self.samples = self.chain.train_samples(pool, layout, seed)

    #: steps that share one draw of drops (fresh data only; a pool is drawn once)
    reuse = 1

    def __len__(self) -> int:
        return self.samples.shape[0]

    def batch(self, size: int, seed: int, stage: str = "labels", drop_seed: int | None = None) -> dict:
        """A training batch of ``size`` samples, a function of ``seed`` only (``drop_seed``: fresh
        data's draw of drops)."""
        return self.chain.train_batch(self.samples, size, generator(seed), self.train, stage, self.users)

    def val_batches(self, size: int, seed: int, max_batches: int = 8) -> list[dict]:
        """Validation batches in the chain's layout, from the pool in order, with the training
        ranges of SNR / power drawn per sample from a fixed ``seed``."""
        return self.chain.val_batches(self.pool, self.samples, size, seed, self.train, max_batches)


class FreshData(TaskData):
    """Samples of ``task`` from new drops every batch: the batch of seed ``s`` cuts the task's
    samples from ``drops`` drops drawn with a seed derived from ``s`` (so it is a function of the
    seed only, as a pool batch is), then draws the batch from them as :class:`TaskData` does.

    :param source: the :class:`~linksim.channel.ChannelSource` of the pool's scenario
    :param drops: drops per draw (enough for ``size`` samples: :func:`drops_per_batch`)
    :param reuse: steps that share one draw (``train.drops_reuse``; 1: new drops every step)
    :param speed_kmh: a speed or ``(low, high)``, per user
    :param num_users: K of the drops
    :param num_time: time samples per drop
    Other parameters as :class:`TaskData` (``pool``: the validation pool is separate).
    """

    def __init__(self, task: str, source, drops: int, speed_kmh, num_users: int, num_time: int,
                 dims: Dims, sc: Scenario, train, seed: int, layout: str = "",
                 users: tuple[int, int] | None = None, reuse: int = 1):
        self.task, self.dims, self.sc, self.train, self.users = task, dims, sc, train, users
        self.chain = chain_class(task)(sc)
        self.source, self.drops, self.speed = source, int(drops), speed_kmh
        self.num_users, self.num_time, self.layout = num_users, num_time, layout
        self.pool = self.samples = None
        self.reuse = int(reuse)
        self._last: tuple = (None, None)          # (drop seed, its samples): a draw serves `reuse` steps

    def __len__(self) -> int:
        return self.drops

    def batch(self, size: int, seed: int, stage: str = "labels", drop_seed: int | None = None) -> dict:
        from ..config import derive_seed
        drop_seed = derive_seed(seed, "drops") if drop_seed is None else drop_seed
        if self._last[0] != drop_seed:
            self._last = (drop_seed, self.chain.fresh_samples(self.source, self.drops, self.speed, self.num_users,
                                                              self.num_time, self.layout, drop_seed))
        return self.chain.train_batch(self._last[1], size, generator(seed), self.train, stage, self.users)


def drops_per_batch(task: str, sc: Scenario, size: int, layout: str, num_users: int, num_time: int) -> int:
    """Drops a fresh batch of ``size`` samples needs: ``ceil(size / samples per drop)``, counted
    by cutting one drop (e.g. detection: F subcarriers per drop; per-antenna prediction: K x M')."""
    chain = chain_class(task)(sc)
    m, f = sc.channel.num_bs_antennas, sc.channel.num_subcarriers
    one = torch.zeros(1, num_time, num_users, m, f, dtype=torch.complex64)
    per_drop = len(chain.train_samples(one, layout, 0))
    return max(1, -(-size // per_drop))


class StepBatches(torch.utils.data.Dataset):
    """Step -> ``{task: batch}``, every task's training batch of that step: what the trainer's
    data workers draw ahead of it (a :class:`torch.utils.data.DataLoader` over the steps).

    :param datas: task -> its :class:`TaskData` / :class:`FreshData` and batch size
    :param seed_of: ``(step, task) -> seed`` of that batch
    :param stage_of: ``step -> stage``
    """

    def __init__(self, datas: dict, seed_of, stage_of):
        self.datas, self.seed_of, self.stage_of = datas, seed_of, stage_of

    def __getitem__(self, step: int) -> dict:
        from ..config import derive_seed
        stage = self.stage_of(step)
        # the drops of a step are those of the first step of its group of `reuse` steps
        return {t: d.batch(size, self.seed_of(step, t), stage,
                           derive_seed(self.seed_of(step - step % d.reuse, t), "drops"))
                for t, (d, size) in self.datas.items()}


def step_loader(batches: StepBatches, start: int, stop: int, workers: int):
    """Batches of steps ``start .. stop-1`` in order, drawn by ``workers`` processes ahead of the
    trainer (0: in the trainer's process). The loader has its own generator: the trainer's global
    RNG (dropout) is left untouched, so a resumed run draws what an uninterrupted one does."""
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, stop),
                                       num_workers=workers, prefetch_factor=4 if workers else None,
                                       multiprocessing_context="fork" if workers else None,
                                       generator=torch.Generator().manual_seed(0))
