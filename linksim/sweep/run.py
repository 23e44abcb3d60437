"""Running one sweep point: :func:`run_point` rebuilds the chain and blocks from a plan's names and
returns the point's rows. Nothing is shared between points but a per-process memo of built blocks
and drawn channels (:class:`Workspace`), an optional speed-up that changes no number: blocks are
deterministic functions of their inputs, and channels of their seeds.
"""
from __future__ import annotations

from ..blocks.base import progress_within
from ..chains import ChannelCache, chain_class
from ..channel import ChannelSource
from .plan import Plan, PointSpec


class Workspace:
    """Chains and blocks built for plans, kept for the next point of the same plan in this process.

    :param built: label -> blocks already built for ``plan`` (e.g. by :func:`~linksim.sweep.plan.plan`)
    """

    def __init__(self, plan: Plan | None = None, built: dict | None = None):
        self._memo: dict = {}
        if plan is not None and built is not None:
            self._memo[self.key(plan)] = (self._chain(plan), dict(built))

    @staticmethod
    def key(plan: Plan):
        """What identifies ``plan``'s chain and blocks (its scenario, task and block names)."""
        return plan.scenario.hash, plan.scenario.path, plan.task, tuple(sorted(plan.blocks.items()))

    @staticmethod
    def _chain(plan: Plan):
        return chain_class(plan.task)(plan.scenario, ChannelCache(ChannelSource(plan.scenario)))

    def get(self, plan: Plan):
        """(chain, label -> block) of ``plan``, built once per process."""
        key = self.key(plan)
        if key not in self._memo:
            cls = chain_class(plan.task)
            self._memo[key] = (self._chain(plan),
                               {lb: cls.make_block(n, plan.scenario) for lb, n in plan.blocks.items()})
        return self._memo[key]


def run_point(plan: Plan, spec: PointSpec, labels: list[str], progress=None,
              workspace: Workspace | None = None) -> list[dict]:
    """Run the blocks ``labels`` of ``plan`` at point ``spec``; return its rows (the results.csv
    columns). A function of its arguments only: any process gives the same rows.

    :param progress: called with the drops of each finished batch; if it has a ``partial``
        method (:class:`~linksim.sweep.Progress`), that gets the fraction of a batch a slow block
        (``ml``) has done, as the block reports it (:func:`~linksim.blocks.base.report_progress`)
    :param workspace: reuse built blocks and drawn channels (default: build afresh)
    """
    chain, blocks = (workspace or Workspace()).get(plan)
    point = chain.point(spec.x_name, spec.x)
    with progress_within(getattr(progress, "partial", None)):
        acc = chain.run_point({lb: blocks[lb] for lb in labels}, point, progress=progress)
    return [row(plan.task, lb, point, metric, a) for lb, ms in acc.items() for metric, a in ms.items()]


def row(task, label, point, metric, acc) -> dict:
    """One results.csv row from a metric accumulator."""
    value, lo, hi, n = acc.result()
    return {"task": task, "block": label, "x_name": point.x_name, "x": point.x, "metric": metric,
            "value": value, "ci_low": lo, "ci_high": hi, "n": n}
