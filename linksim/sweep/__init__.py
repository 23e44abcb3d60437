"""Sweeps: run blocks of one task over a grid of one parameter, resumable, into a results store.

A sweep is *plan* -> *run* -> *store*:

- :func:`~linksim.sweep.plan.plan` checks everything before any compute (task, grid, block names,
  agents, every point's sizes) and lays out a picklable :class:`~linksim.sweep.plan.Plan`;
- a backend (:mod:`~linksim.sweep.backends`; ``local`` by default) runs
  :func:`~linksim.sweep.run.run_point` for each point not yet in the store;
- the driver alone writes: each finished point's rows are appended to ``results.csv`` at once
  (:class:`~linksim.results.ResultsStore`), and ``meta.json`` is updated at the end.

Example::

    from linksim.sweep import sweep
    store = sweep("scenarios/quick.toml", "detection", ["lmmse", "kbest"], "snr_db=0:20:4",
                  "results/det")                       # re-running resumes
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import LinksimError
from ..results import ResultsStore, git_commit, versions
from ..scenario import Scenario, load_scenario
from .backends import BACKENDS, Backend, get_backend, register_backend
from .plan import MAX_POINTS, Plan, PointSpec, block_label, fingerprint, parse_over, plan
from .run import Workspace, run_point

__all__ = ["BACKENDS", "Backend", "MAX_POINTS", "Plan", "PointSpec", "Progress", "Workspace", "block_label",
           "fingerprint", "get_backend", "parse_over", "plan", "register_backend", "run_point", "sweep"]


def sweep(scenario: str | Path | Scenario, task: str, blocks: list[str], over: str | None,
          out: str | Path, progress: bool = True, backend: str | Backend = "local") -> ResultsStore:
    """Run ``blocks`` of ``task`` over the ``over`` grid; finished (block, point)s are skipped.

    :param scenario: a scenario file or :class:`~linksim.Scenario`
    :param task: a registered task (``linksim list``)
    :param blocks: block names (``agent:PATH`` for agents; ``PREDICTOR+PRECODER`` for ``loop``)
    :param over: ``NAME=START:STOP:STEP`` / ``NAME=V1,V2`` / None (the scenario's own value)
    :param out: the results folder (``results.csv``, ``meta.json``)
    :param progress: show a progress bar
    :param backend: ``"local"`` (default), ``"ray"`` or a :class:`~linksim.sweep.backends.Backend`
        (:func:`get_backend` with options, e.g. ``get_backend("ray", workers=4)``)
    :returns: the store holding ``out/results.csv`` and ``out/meta.json``
    """
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    runner = get_backend(backend) if isinstance(backend, str) else backend
    the_plan, built = plan(sc, task, blocks, over)
    store = ResultsStore(out)
    store.check_writable()
    meta = store.meta()
    if meta and meta.get("scenario_hash") != sc.hash:
        raise LinksimError(f"{store.meta_path}: holds results of another scenario "
                           f"(hash {meta.get('scenario_hash')} != {sc.hash}); choose another --out")
    for lb, fp in the_plan.weights.items():
        old = meta.get("weights", {}).get(lb)
        if old and old != fp and any(r["block"] == lb for r in store.rows):
            raise LinksimError(f"{out}: the results of '{lb}' come from other weights ({old}, now {fp}); "
                               "choose another --out or delete that folder")
    todo = []
    for p in the_plan.points:
        x_name, x = _resolved(the_plan, p)
        labels = [lb for lb in the_plan.blocks if not store.done(task, lb, x_name, x)]
        if labels:
            todo.append((p, labels))
    t0 = time.time()
    resumed = len(the_plan.points) - len(todo)
    bar = Progress(sum(the_plan.budgets[p.index] for p, _ in todo), sc.run.batch_size,
                   f"{task} {len(blocks)} block(s)" + (f", {resumed} point(s) resumed" if resumed else ""),
                   progress, len(todo))

    def on_point(p: PointSpec, rows: list[dict]) -> None:
        store.add(rows)                      # appended at once: a killed run keeps finished points
        bar.point_done(the_plan.budgets[p.index], p)

    try:
        runner.run(the_plan, todo, built, bar, on_point)
    finally:  # clear the bar, so that an error message starts on its own line
        bar.close()
        store.finish()
    _update_meta(store, meta, sc, task, blocks, over, time.time() - t0, the_plan.weights)
    return store


def _resolved(the_plan: Plan, p: PointSpec) -> tuple[str, float]:
    """The (x_name, x) a point's rows carry (the scenario's value when the grid is empty)."""
    if p.x_name is not None:
        return p.x_name, float(p.x)
    from ..chains import chain_class
    pt = chain_class(the_plan.task)(the_plan.scenario).point()
    return pt.x_name, pt.x


class Progress:
    """A sweep's progress bar, counting only the drops computed in this run, so that its rate
    and time left are real ones.

    Points resumed from results.csv are left out of the total (the label says how many); a point
    that stops early (enough errors) takes the drops it did not need off the total instead of
    counting them as done; a slow block reports how far it is within a batch (:meth:`partial`,
    via :func:`~linksim.blocks.base.report_progress`), so the bar moves between batches.

    Points may run at once (the Ray backend): drops are counted per point, so a point that
    finishes early gives back exactly the drops it did not run.

    :param total: most drops of the points to run
    :param batch: drops per batch (``run.batch_size``), for the progress within a batch
    :param desc: the bar's label
    :param enabled: show it
    :param points: points to run (the bar shows how many are done)

    .. rubric:: Examples

    .. code-block:: python

        bar = Progress(total=4096, batch=32, desc="detection 2 block(s)", enabled=True)
        bar.partial(0.5)          # a slow block is half through a batch: 16/4096
        bar(32)                   # the batch finished: 32/4096
        bar.point_done(2048)      # the point stopped after 32 of its 2048 drops: 32/2080
        bar.close()
    """

    def __init__(self, total: int, batch: int, desc: str, enabled: bool, points: int = 0):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=desc, unit="drop", disable=not enabled, leave=False)
        self.batch, self.done, self.points, self.finished = batch, 0, points, 0
        self.live: dict = {}                 # point index (None: the one running here) -> its drops

    def __call__(self, drops: int, point=None) -> None:
        """A batch of ``drops`` drops of ``point`` (None: the point running in this process) finished."""
        self.done += drops
        key = None if point is None else point.index
        self.live[key] = self.live.get(key, 0) + drops
        self._show(self.done)

    def partial(self, fraction: float) -> None:
        """The running block call (one batch) is ``fraction`` done."""
        left = max(0, self.bar.total - self.done)
        self._show(self.done + int(fraction * min(self.batch, left)))

    def point_done(self, budget: int, point=None) -> None:
        """A point of at most ``budget`` drops finished: drop what it did not run from the total."""
        ran = self.live.pop(None, 0) + (self.live.pop(point.index, 0) if point is not None else 0)
        self.bar.total -= max(0, budget - ran)
        self.finished += 1
        if self.points:
            self.bar.set_postfix_str(f"{self.finished}/{self.points} points", refresh=False)
        self._show(self.done)
        self.bar.refresh()

    def _show(self, n: int) -> None:
        if n != self.bar.n:
            self.bar.update(n - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _update_meta(store, meta, sc, task, blocks, over, wall_s, weights):
    import torch
    runs = meta.get("runs", [])
    runs.append({"task": task, "blocks": blocks, "over": over, "wall_time_s": round(wall_s, 3),
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    store.write_meta({
        "scenario_file": sc.path, "scenario_hash": sc.hash, "scenario": sc.source,
        "seed": sc.run.seed, "device": sc.run.device, "precision": sc.run.precision,
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(), "versions": versions("linksim", "torch", "sionna-no-rt", "numpy"),
        "wall_time_s": round(sum(r["wall_time_s"] for r in runs), 3), "runs": runs,
        "weights": meta.get("weights", {}) | weights,
    })
