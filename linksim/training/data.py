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

    def __len__(self) -> int:
        return self.samples.shape[0]

    def batch(self, size: int, seed: int, stage: str = "labels") -> dict:
        """A training batch of ``size`` samples, a function of ``seed`` only."""
        return self.chain.train_batch(self.samples, size, generator(seed), self.train, stage, self.users)

    def val_batches(self, size: int, seed: int, max_batches: int = 8) -> list[dict]:
        """Validation batches in the chain's layout, from the pool in order, with the training
        ranges of SNR / power drawn per sample from a fixed ``seed``."""
        return self.chain.val_batches(self.pool, self.samples, size, seed, self.train, max_batches)
