"""Planning a sweep: the grid, the blocks and every check, before any compute.

A :class:`Plan` holds only names and numbers (the scenario, the task, block names, the grid), so
it pickles and travels to another process, where :func:`linksim.sweep.run.run_point` rebuilds
what it needs from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..chains import SWEEP_PARAMS, chain_class
from ..errors import LinksimError
from ..scenario import Scenario

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


def _point(chain, x_name: str, x: float):
    """The point ``x_name = x``; a value the scenario's rules refuse is blamed on ``--over``."""
    try:
        return chain.point(x_name, x)
    except LinksimError as e:
        msg = str(e)
        if msg.startswith("--over"):
            raise
        msg = msg.removeprefix(f"{chain.scenario.path}: ")
        raise LinksimError(f"--over {x_name}={x:g}: {msg}") from None


def check_sizes(cls, block, scenario: Scenario, label: str) -> None:
    """Refuse, in one line, sizes of ``scenario`` that ``block`` (one part of the block ``label``
    of the task ``cls``) cannot serve: K > M for a block that does not serve overloaded systems
    (``serves_overloaded = False``: zf, zf_det, kbest), and what a block's own ``check_scenario``
    refuses (agents: the sizes they were trained for)."""
    k, m = cls.num_users(scenario), scenario.channel.num_bs_antennas
    if k > m and not getattr(block, "serves_overloaded", True):
        why = getattr(block, "overloaded_why", "") or "choose blocks that serve it, `linksim list`"
        raise LinksimError(f"block '{label}' needs num_users <= BS antennas, got K={k} > M={m} "
                           f"(an overloaded system): {why}")
    if hasattr(block, "check_scenario"):
        block.check_scenario(scenario)


def check_work(cls, block, scenario: Scenario, drops: int) -> None:
    """Refuse, in one line, a point that ``block`` (one part of a block of the task ``cls``) would
    take hours on: a block with ``check_work`` (``ml``: hypotheses x symbol vectors x drops)
    judges the point's ``drops`` (its budget), named after the task's ``max_samples`` key."""
    if hasattr(block, "check_work"):
        block.check_work(scenario, cls.num_users(scenario), drops, f"{cls.section}.max_samples")


def block_label(name: str) -> str:
    """The ``block`` column: the name, or an agent's folder name."""
    return "+".join(Path(p[6:]).name if p.startswith("agent:") else p for p in name.split("+"))


def fingerprint(parts) -> str:
    """The weights' hash of a block made of ``parts`` (:meth:`Chain.parts`), the parts' joined
    by ``+``; empty for built-in blocks (only agent blocks carry a ``fingerprint``)."""
    return "+".join(filter(None, (getattr(p, "fingerprint", "") for p in parts)))


@dataclass(frozen=True)
class PointSpec:
    """One point of a plan: ``x_name = x`` (``x = None``: the scenario's own value)."""

    index: int
    x_name: str | None
    x: float | None


@dataclass(frozen=True)
class Plan:
    """What a sweep runs: names and numbers only (picklable).

    :param scenario: the scenario
    :param task: a registered task
    :param blocks: label -> block name (``agent:PATH`` for agents)
    :param points: the grid
    :param budgets: most drops of each point (progress)
    :param weights: label -> fingerprint of an agent block's weights
    """

    scenario: Scenario
    task: str
    blocks: dict
    points: tuple[PointSpec, ...]
    budgets: tuple[int, ...]
    weights: dict = field(default_factory=dict)


def plan(scenario: Scenario, task: str, blocks: list[str], over: str | None) -> tuple[Plan, dict]:
    """Check everything and lay out the sweep: the task, the grid, every block (built once here,
    so a bad name or agent fails before any compute) and every point's sizes against each block.

    :output plan: :class:`Plan`
    :output built: label -> the blocks built for the checks (a local run reuses them)
    """
    cls = chain_class(task)
    if not blocks:
        raise LinksimError("--blocks: give at least one block name")
    x_name, values = parse_over(over)
    chain = cls(scenario)
    points = [_point(chain, x_name, v) for v in values] if values else [chain.point()]
    labels = {block_label(n): n for n in blocks}
    if len(labels) != len(blocks):
        raise LinksimError(f"--blocks: duplicate block names in {','.join(blocks)}")
    built = {lb: cls.make_block(n, scenario) for lb, n in labels.items()}
    budgets = tuple(chain.budget(p) for p in points)
    for p, drops in zip(points, budgets):  # every point's sizes and work, before any compute
        where = f"--over {p.x_name}={p.x:g}" if values else scenario.path
        for lb, b in built.items():
            for part in cls.parts(b):
                try:
                    check_sizes(cls, part, p.scenario, lb)
                    check_work(cls, part, p.scenario, drops)
                except LinksimError as e:
                    raise LinksimError(f"{where}: {e}") from None
    specs = tuple(PointSpec(i, x_name, v) for i, v in enumerate(values)) if values else \
        (PointSpec(0, None, None),)
    weights = {lb: fingerprint(cls.parts(b)) for lb, b in built.items() if fingerprint(cls.parts(b))}
    return Plan(scenario, task, labels, specs, budgets, weights), built
