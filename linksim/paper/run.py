"""``linksim paper``: train what is missing, run the data folders' sweeps (resumable), then draw the
figures and write the tables and ``OUT/README.md`` from the CSVs."""
from __future__ import annotations

import contextlib
import csv
import fcntl
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from ..agents.spec import read_agent
from ..errors import LinksimError
from ..results import ResultsStore, atomic_write
from ..scenario import load_scenario
from .budget import Budget, load_budget
from .items import DATA, FIGURES, TABLES, Data, data_of, item_names

if TYPE_CHECKING:
    from ..sweep import Backend


def parse_only(text: str | None) -> list[str]:
    """``--only fig7,table1`` -> the item names (all when empty); an unknown name is one line
    listing the known ones."""
    names = item_names()
    if not text:
        return names
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in chosen if n not in names]
    if bad or not chosen:
        raise LinksimError(f"--only {text!r}: unknown item {bad[0] if bad else ''!r} (items: {', '.join(names)})")
    return chosen


class Roles:
    """``@role`` -> ``agent:FOLDER`` through the budget (``@backbone``: the user's, if any)."""

    def __init__(self, budget: Budget, backbone_agent: str | None):
        self.budget, self.backbone_agent = budget, backbone_agent

    def folder(self, role: str) -> str | None:
        if role == "backbone":
            return self.backbone_agent
        return self.budget.agent(role)

    def block(self, name: str) -> str | None:
        """A sweep block name, or None when it names the absent ``@backbone``."""
        parts = []
        for part in name.split("+"):
            if part.startswith("@"):
                folder = self.folder(part[1:])
                if folder is None:
                    return None
                part = f"agent:{folder}"
            parts.append(part)
        return "+".join(parts)

    def folders(self, data: Data) -> list[str]:
        names = [b for s in data.sweeps for b in s.blocks] + list(data.logs) + list(data.memory)
        out = []
        for n in names:
            for part in n.split("+"):
                if part.startswith("@") and (f := self.folder(part[1:])) and f not in out:
                    out.append(f)
        return out

    def labels(self) -> dict[str, str]:
        """CSV block label (an agent's folder name) -> its role."""
        out: dict[str, str] = {}
        for r, f in self.budget.agents.items():      # a folder of two roles keeps its first
            out.setdefault(Path(f).name, r)
        if self.backbone_agent:
            out[Path(self.backbone_agent).name] = "backbone"
        return out


def backbone_agent(budget: Budget, source: str, out: Path) -> str:
    """An agent folder ``OUT/agents/backbone-<name>`` with the ablation reference's recipe on the
    user's backbone (``--backbone``); trained like the others when its weights are missing."""
    ref = Path(budget.agent("ablation")) / "agent.toml"
    text = ref.read_text()
    data = tomllib.loads(text)
    slug = re.sub(r"[^\w.-]+", "-", Path(source).name if Path(source).exists() else source).strip("-")
    folder = out / "agents" / f"backbone-{slug}"
    scenario = str(Path(read_agent(ref.parent).scenario_path()).resolve())
    body = text.split("\n[result]")[0]
    body = re.sub(r'(?m)^source = .*$', f"source = {_toml_str(source)}", body, count=1)
    body = re.sub(r'(?m)^scenario = .*$', f"scenario = {_toml_str(scenario)}", body, count=1)
    if data.get("model", {}).get("backbone", {}).get("source") is None:
        raise LinksimError(f"{ref}: [model.backbone] source missing (needed to swap in --backbone)")
    toml = folder / "agent.toml"
    head = f"# Table II: {budget.agent('ablation')}'s recipe on the backbone {source} (linksim paper --backbone)\n"
    if not toml.is_file() or toml.read_text().split("\n[result]")[0] != head + body:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(toml, head + body)
    return str(folder)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ensure_trained(folders: list[str], progress: bool) -> None:
    """Train every agent of ``folders`` whose weights are missing (resumes a checkpoint)."""
    from ..training import train_agent

    for f in folders:
        spec = read_agent(f)
        if spec.weights.is_file() and "dims" in spec.result:
            continue
        print(f"linksim paper: training {f} ({spec.train.steps} steps; the bar shows the time left; "
              "an interrupted run resumes from its last checkpoint)", flush=True)
        train_agent(f, progress=progress)


def run_data(data: Data, budget: Budget, roles: Roles, out: Path, progress: bool,
             backend: str | Backend = "local") -> None:
    """Fill ``OUT/<data.name>/results.csv`` (finished points and rows are kept); the sweeps' points
    run on ``backend`` (a name or a :class:`~linksim.sweep.Backend` with its options)."""
    folder = out / data.name
    with _exclusive(folder):
        _run_data(data, budget, roles, folder, progress, backend)


@contextlib.contextmanager
def _exclusive(folder: Path):
    """Hold ``folder/.lock`` (flock) while a data folder is written: a second ``linksim paper``
    on the same OUT is refused for that folder instead of racing on its results.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LinksimError(f"{folder}: another linksim run is writing there; wait for it or "
                               "choose another --out") from None
        yield


def _run_data(data: Data, budget: Budget, roles: Roles, folder: Path, progress: bool,
              backend: str | Backend) -> None:
    from ..sweep import sweep

    sc = load_scenario(budget.scenario_of(data.scenario) if data.scenario else budget.scenario)
    changes = {k: dict(v) for k, v in data.changes.items()}
    for sec, values in budget.changes.get(data.name, {}).items():
        changes.setdefault(sec, {}).update(values)
    try:
        sc = sc.replace(**changes) if changes else sc
    except TypeError:
        raise LinksimError(f"{budget.path}: changes.{data.name}: expected tables of scenario sections") from None
    for s in data.sweeps:
        blocks = [b for b in (roles.block(n) for n in s.blocks) if b]
        over = budget.grid(s.over[5:]) if s.over.startswith("grid:") else s.over
        sweep(sc, s.task, blocks, over, folder, progress=progress, backend=backend)
    if data.logs:
        _training_logs(data, roles, folder)
    if data.memory:
        _memory(data, roles, folder)


def _training_logs(data: Data, roles: Roles, folder: Path) -> None:
    """Training losses of ``data.log_task`` per step from each agent's train_log.csv."""
    store = ResultsStore(folder)
    rows = []
    for role in data.logs:
        agent = roles.folder(role[1:])
        log = Path(agent) / "train_log.csv"
        if not log.is_file():
            raise LinksimError(f"{log}: not found (train agent:{agent} first)")
        spec = read_agent(agent)
        batch = spec.train.batch_sizes.get(data.log_task, spec.train.batch_size)
        with open(log, newline="") as f:
            for r in csv.DictReader(f):
                if r["task"] == data.log_task and r["loss"]:
                    v = float(r["loss"])
                    rows.append({"task": "training", "block": Path(agent).name, "x_name": "step",
                                 "x": int(r["step"]), "metric": f"loss_{data.log_task}", "value": v,
                                 "ci_low": v, "ci_high": v, "n": batch})
    store.add(rows)


def _memory(data: Data, roles: Roles, folder: Path) -> None:
    """One probe per agent (skipped when its rows exist: a resumed run keeps the measured values)."""
    from .memory import training_memory

    store = ResultsStore(folder)
    for role in data.memory:
        agent = roles.folder(role[1:])
        name = Path(agent).name
        if store.done("training", name, "batch_size", 32.0):
            continue
        m = training_memory(agent, batch=32)
        store.add([{"task": "training", "block": name, "x_name": "batch_size", "x": 32.0, "metric": k,
                    "value": v, "ci_low": v, "ci_high": v, "n": 1} for k, v in m.items()])


def run_paper(budget: str, out: str | Path, only: str | None = None, backbone: str | None = None,
              progress: bool = True, backend: str | Backend = "local") -> list[Path]:
    """Everything ``linksim paper`` does; returns the files written (figures, tables, README).
    ``backend``: where the sweeps' points run (a name, or a :class:`~linksim.sweep.Backend`)."""
    from .render import render_figure, render_readme, render_table

    b = load_budget(budget)
    names = parse_only(only)
    out = Path(out)
    ResultsStore(out).check_writable()
    bb = backbone_agent(b, backbone, out) if backbone else None
    roles = Roles(b, bb)
    needed = set().union(*(data_of(n) for n in names))
    datas = [d for d in DATA if d.name in needed]
    for d in datas:
        ensure_trained(roles.folders(d), progress)
    for d in datas:
        run_data(d, b, roles, out, progress, backend)
    written = []
    labels = roles.labels()
    for f in FIGURES:
        if f.name in names:
            written += render_figure(f, out, labels)
    for t in TABLES:
        if t.name in names:
            written += render_table(t, out, roles)
    from .targets import render_targets
    written.append(render_targets(out, roles))
    written.append(render_readme(out, b, roles))
    return written
