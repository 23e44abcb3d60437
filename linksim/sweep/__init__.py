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

__all__ = ["BACKENDS", "Backend", "MAX_POINTS", "Plan", "PointSpec", "Workspace", "block_label",
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
    todo, skipped = [], 0
    for p, budget in zip(the_plan.points, the_plan.budgets):
        x_name, x = _resolved(the_plan, p)
        labels = [lb for lb in the_plan.blocks if not store.done(task, lb, x_name, x)]
        if labels:
            todo.append((p, labels))
        else:
            skipped += budget
    t0 = time.time()
    bar = _bar(sum(the_plan.budgets), skipped, f"{task} {len(blocks)} block(s)", progress)
    finished = [0]

    live: dict = {}                          # point index (None: unnamed) -> drops shown so far

    def on_drops(n: int, p: PointSpec | None = None) -> None:
        key = None if p is None else p.index
        live[key] = live.get(key, 0) + n
        bar.update(n)

    def on_point(p: PointSpec, rows: list[dict]) -> None:
        store.add(rows)                      # appended at once: a killed run keeps finished points
        finished[0] += 1
        shown = live.pop(p.index, 0) + live.pop(None, 0)
        bar.update(the_plan.budgets[p.index] - shown)   # a point may stop early (enough errors)
        bar.set_postfix_str(f"{finished[0]}/{len(todo)} points", refresh=True)

    try:
        runner.run(the_plan, todo, built, on_drops, on_point)
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


def _bar(total, initial, desc, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="drop", disable=not enabled, leave=False)


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
