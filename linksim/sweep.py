"""Sweeps: run blocks of one task over a grid of one parameter, resumable, into a ResultsStore."""
from __future__ import annotations

import math
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from .blocks import get as get_block
from .chains import CHAINS, SWEEP_PARAMS, Chain, LoopBlock
from .errors import LinksimError
from .results import ResultsStore
from .scenario import Scenario, load_scenario


#: most points a START:STOP:STEP grid may have (refused before the grid is built)
MAX_POINTS = 10_000


def parse_over(text: str | None) -> tuple[str | None, list[float] | None]:
    """``NAME=START:STOP:STEP`` (STOP included), ``NAME=V1,V2,...`` or ``NAME=V``; every number
    finite, a grid at most :data:`MAX_POINTS` points."""
    if not text:
        return None, None
    if "=" not in text:
        raise LinksimError(f"--over {text!r}: expected NAME=START:STOP:STEP")
    name, spec = text.split("=", 1)
    name = name.strip()
    if name not in SWEEP_PARAMS:
        raise LinksimError(f"--over {name!r}: unknown parameter (choose from {', '.join(SWEEP_PARAMS)})")
    try:
        numbers = [float(v) for v in spec.split(":" if ":" in spec else ",")]
    except ValueError:
        raise LinksimError(f"--over {text!r}: values must be numbers (NAME=START:STOP:STEP)") from None
    bad = [v for v in numbers if not math.isfinite(v)]
    if bad:
        raise LinksimError(f"--over {text!r}: {bad[0]} is not a finite number")
    if ":" not in spec:
        return name, numbers
    if len(numbers) != 3:
        raise LinksimError(f"--over {text!r}: expected NAME=START:STOP:STEP")
    return name, _grid(text, *numbers)


def _grid(text: str, start: float, stop: float, step: float) -> list[float]:
    """START, START+STEP, ... up to STOP included; its size is checked before it is built."""
    if step <= 0 or stop < start:
        raise LinksimError(f"--over {text!r}: empty grid (need STEP > 0 and STOP >= START)")
    span = (stop - start) / step                       # inf when it overflows
    if span >= MAX_POINTS:                             # i.e. floor(span) + 1 > MAX_POINTS
        n = math.floor(span) + 1 if math.isfinite(span) else span
        raise LinksimError(f"--over {text!r}: {n} points, more than {MAX_POINTS}; use a larger STEP")
    return [float(v) for v in np.round(np.arange(start, stop + step / 2, step), 10)]


def block_label(name: str) -> str:
    """The ``block`` column: the name, or an agent's folder name."""
    return "+".join(Path(p[6:]).name if p.startswith("agent:") else p for p in name.split("+"))


def make_block(name: str, chain: Chain, scenario: Scenario):
    """Instantiate a block for ``chain`` (:func:`linksim.blocks.get` checks the kind)."""
    if chain.task == "loop":
        parts = name.split("+")
        if len(parts) != 2:
            raise LinksimError(f"block {name!r}: --task loop takes PREDICTOR+PRECODER (e.g. ar+wmmse)")
        return LoopBlock(get_block(parts[0], "predictor", scenario),
                         get_block(parts[1], "precoder", scenario), parts[0])
    return get_block(name, chain.kind, scenario)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("linksim", "torch", "sionna-no-rt", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sweep(scenario: str | Path | Scenario, task: str, blocks: list[str], over: str | None,
          out: str | Path, progress: bool = True) -> ResultsStore:
    """Run ``blocks`` of ``task`` over the ``over`` grid; finished (block, point)s are skipped.

    :returns: the store holding ``out/results.csv`` and ``out/meta.json``
    """
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if task not in CHAINS:
        raise LinksimError(f"--task {task!r}: choose from {', '.join(CHAINS)}")
    if not blocks:
        raise LinksimError("--blocks: give at least one block name")
    x_name, values = parse_over(over)
    chain = CHAINS[task](sc)
    points = [chain.point(x_name, v) for v in values] if values else [chain.point()]
    built = {block_label(n): make_block(n, chain, sc) for n in blocks}
    if len(built) != len(blocks):
        raise LinksimError(f"--blocks: duplicate block names in {','.join(blocks)}")

    for p in points:                     # every point's sizes, before any compute
        for lb, b in built.items():
            for part in (b.predictor, b.precoder) if isinstance(b, LoopBlock) else (b,):
                if hasattr(part, "check_scenario"):
                    try:
                        part.check_scenario(p.scenario)
                    except LinksimError as e:
                        raise LinksimError(f"--over {p.x_name}={p.x:g}: {e}") from None
    store = ResultsStore(out)
    store.check_writable()
    meta = store.meta()
    if meta and meta.get("scenario_hash") != sc.hash:
        raise LinksimError(f"{store.meta_path}: holds results of another scenario "
                           f"(hash {meta.get('scenario_hash')} != {sc.hash}); choose another --out")
    weights = {lb: fingerprint(b) for lb, b in built.items() if fingerprint(b)}
    for lb, fp in weights.items():
        old = meta.get("weights", {}).get(lb)
        if old and old != fp and any(r["block"] == lb for r in store.rows):
            raise LinksimError(f"{out}: the results of '{lb}' come from other weights ({old}, now {fp}); "
                               "choose another --out or delete that folder")
    t0 = time.time()
    budgets = [chain.budget(p) for p in points]
    bar = _bar(sum(budgets), f"{task} {len(blocks)} block(s)", progress)
    try:  # a point's rows are written once it is finished; an error keeps the earlier ones
        for p, cum in zip(points, np.cumsum(budgets)):
            todo = {lb: b for lb, b in built.items() if not store.done(task, lb, p.x_name, p.x)}
            if todo:
                bar.set_postfix_str(f"{p.x_name}={p.x:g}")
                acc = chain.run_point(todo, p, progress=bar.update)
                store.add([_row(task, lb, p, metric, a) for lb, ms in acc.items() for metric, a in ms.items()])
            bar.n = int(cum)  # a point may stop early (enough errors) or be skipped (already done)
            bar.refresh()
    finally:  # clear the bar, so that an error message starts on its own line
        bar.close()
    _update_meta(store, meta, sc, task, blocks, over, time.time() - t0, weights)
    return store


def _row(task, label, point, metric, acc) -> dict:
    value, lo, hi, n = acc.result()
    return {"task": task, "block": label, "x_name": point.x_name, "x": point.x, "metric": metric,
            "value": value, "ci_low": lo, "ci_high": hi, "n": n}


def _bar(total, desc, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="drop", disable=not enabled, leave=False)


def fingerprint(block) -> str:
    """The weights' hash of an agent block (``a+b`` for loop pairs); empty for built-in blocks."""
    if isinstance(block, LoopBlock):
        return "+".join(filter(None, (fingerprint(block.predictor), fingerprint(block.precoder))))
    return getattr(block, "fingerprint", "")


def _update_meta(store, meta, sc, task, blocks, over, wall_s, weights):
    import torch
    runs = meta.get("runs", [])
    runs.append({"task": task, "blocks": blocks, "over": over, "wall_time_s": round(wall_s, 3),
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    store.write_meta({
        "scenario_file": sc.path, "scenario_hash": sc.hash, "scenario": sc.source,
        "seed": sc.run.seed, "device": sc.run.device, "precision": sc.run.precision,
        "torch_threads": torch.get_num_threads(),
        "git_commit": _git_commit(), "versions": _versions(),
        "wall_time_s": round(sum(r["wall_time_s"] for r in runs), 3), "runs": runs,
        "weights": meta.get("weights", {}) | weights,
    })
