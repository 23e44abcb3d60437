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
from .items import DATA, FIGURES, TABLES, Data, data_of, groups, item_names

if TYPE_CHECKING:
    from ..sweep import Backend


def parse_only(text: str | None) -> list[str]:
    """``--only fig7,table1`` -> the item names; a group name (``universal``) stands for its items;
    empty: the ``paper`` group. An unknown name is one line listing the known ones."""
    names, grouped = item_names(), groups()
    if not text:
        return grouped["paper"]
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in chosen if n not in names and n not in grouped]
    if bad or not chosen:
        raise LinksimError(f"--only {text!r}: unknown item {bad[0] if bad else ''!r} (items: {', '.join(names)}; "
                           f"groups: {', '.join(grouped)})")
    out: list[str] = []
    for n in chosen:
        out += [i for i in grouped.get(n, [n]) if i not in out]
    return out


class Roles:
    """``@role`` -> ``agent:FOLDER`` through the budget (``@backbone``: the user's, if any). A role
    may have one folder per training seed: figures show the first, seeded sweeps and tables all."""

    def __init__(self, budget: Budget, backbone_agent: str | None):
        self.budget, self.backbone_agent = budget, backbone_agent

    def folder(self, role: str) -> str | None:
        if role == "backbone":
            return self.backbone_agent
        return self.budget.agent(role)

    def seed_folders(self, role: str) -> list[str]:
        """Every folder of ``role`` (one per training seed; none for the absent ``@backbone``)."""
        if role == "backbone":
            return [self.backbone_agent] if self.backbone_agent else []
        return self.budget.seeds(role)

    def block(self, name: str) -> str | None:
        """A sweep block name, or None when it names the absent ``@backbone``."""
        blocks = self.blocks(name, seeds=False)
        return blocks[0] if blocks else None

    def blocks(self, name: str, seeds: bool = True) -> list[str]:
        """The sweep block names of ``name``: one per training seed of its ``@role`` (``seeds``),
        else the first seed's only; empty for the absent ``@backbone``."""
        parts = name.split("+")
        roles = [p[1:] for p in parts if p.startswith("@")]
        if not roles:
            return [name]
        folders = self.seed_folders(roles[0]) if seeds else [self.folder(roles[0])]
        if not folders or folders == [None]:
            return []
        out = []
        for f in folders:                 # a pair names one role: the other part is classical
            out.append("+".join(f"agent:{f}" if p.startswith("@") else p for p in parts))
        return out

    def folders(self, data: Data) -> list[str]:
        names = [(b, s.seeds) for s in data.sweeps for b in s.blocks] + \
            [(n, data.seeds) for n in data.logs] + [(n, False) for n in data.memory]
        out = []
        for n, seeds in names:
            for block in self.blocks(n, seeds):
                for part in block.split("+"):
                    if part.startswith("agent:") and part[6:] not in out:
                        out.append(part[6:])
        return out

    def labels(self) -> dict[str, str]:
        """CSV block label (an agent's folder name) -> its role, for every seed's folder."""
        out: dict[str, str] = {}
        for r, folders in self.budget.agents.items():   # a folder of two roles keeps its first
            for f in folders:
                out.setdefault(Path(f).name, r)
        if self.backbone_agent:
            out[Path(self.backbone_agent).name] = "backbone"
        return out

    def seed_index(self) -> dict[str, int]:
        """CSV block label -> the position of its folder in its role's seed list (0: the first)."""
        out: dict[str, int] = {}
        for folders in self.budget.agents.values():
            for i, f in enumerate(folders):
                out.setdefault(Path(f).name, i)
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
        blocks = [b for n in s.blocks for b in roles.blocks(n, s.seeds)]
        over = budget.grid(s.over[5:]) if s.over.startswith("grid:") else s.over
        sweep(sc, s.task, blocks, over, folder, progress=progress, backend=backend)
    if data.logs:
        _training_logs(data, roles, folder)
    if data.memory:
        _memory(data, roles, folder)


def _training_logs(data: Data, roles: Roles, folder: Path) -> None:
    """Validation curves of ``data.log_task`` from each agent's train_log.csv (every seed's agent
    when ``data.seeds``): its chain's validation metric against the training samples seen."""
    from ..chains import chain_class

    metric = f"val_{chain_class(data.log_task).val_metric}"
    store = ResultsStore(folder)
    rows = []
    for role in data.logs:
        for block in roles.blocks(role, data.seeds):
            agent = block[6:]
            log = Path(agent) / "train_log.csv"
            if not log.is_file():
                raise LinksimError(f"{log}: not found (train agent:{agent} first)")
            spec = read_agent(agent)
            batch = spec.train.batch_sizes.get(data.log_task, spec.train.batch_size)
            with open(log, newline="") as f:
                for r in csv.DictReader(f):
                    if r["task"] == data.log_task and r.get("metric") == metric and r["value"]:
                        v = float(r["value"])
                        rows.append({"task": "training", "block": Path(agent).name, "x_name": "samples",
                                     "x": int(r["step"]) * batch, "metric": metric, "value": v,
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
            written += render_figure(f, out, labels, roles.seed_index())
    for t in TABLES:
        if t.name in names:
            written += render_table(t, out, roles)
    from .targets import render_targets
    written.append(render_targets(out, roles))
    written.append(render_readme(out, b, roles))
    return written
