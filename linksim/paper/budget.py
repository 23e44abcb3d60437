"""A paper budget: ``paper/<budget>.toml`` names the scenario, the agent of every role, the sweep grids
and per-item scenario changes of ``linksim paper --budget <budget>``.

Layout::

    scenario = "scenarios/quick.toml"
    [scenarios]              # other scenarios by key (generalisation)
    umi = "scenarios/quick-umi.toml"
    [agents]                 # role -> agent folder (trained by `linksim paper` when its weights are missing)
    gru = "agents/gru"
    llm_multi = "agents/llm-multitask"
    ablation = ["agents/llm-multitask", "agents/llm-multitask-seed1"]   # one folder per training seed
    [grids]                  # item -> NAME=START:STOP:STEP (as `linksim sweep --over`)
    fig5 = "speed_kmh=10:100:10"
    [changes]                # data folder -> scenario sections to change, e.g. fewer drops per point
    fig5 = { prediction = { num_samples = 256 } }
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LinksimError

#: where the budgets live, relative to the working directory (the repository root)
BUDGET_DIR = Path("paper")
KEYS = ("scenario", "scenarios", "agents", "grids", "changes")


@dataclass
class Budget:
    """A validated budget file."""

    name: str
    path: Path
    scenario: str
    agents: dict[str, list[str]] = field(default_factory=dict)   # role -> folders, one per training seed
    scenarios: dict[str, str] = field(default_factory=dict)
    grids: dict[str, str] = field(default_factory=dict)
    changes: dict[str, dict] = field(default_factory=dict)

    def agent(self, role: str) -> str:
        """The folder of ``role`` (its first training seed's: the one figures show); a missing
        role is a clear error naming the budget file."""
        return self.seeds(role)[0]

    def seeds(self, role: str) -> list[str]:
        """Every folder of ``role``, one per training seed (tables give their mean and spread)."""
        if role not in self.agents:
            raise LinksimError(f"{self.path}: [agents] has no '{role}' (needed by `linksim paper`)")
        return self.agents[role]

    def scenario_of(self, key: str) -> str:
        """The scenario file of ``[scenarios].<key>`` (generalisation: other channel models)."""
        if key not in self.scenarios:
            raise LinksimError(f"{self.path}: [scenarios] has no '{key}'")
        return self.scenarios[key]

    def grid(self, item: str) -> str:
        if item not in self.grids:
            raise LinksimError(f"{self.path}: [grids] has no '{item}'")
        return self.grids[item]


def budget_names() -> list[str]:
    return sorted(p.stem for p in BUDGET_DIR.glob("*.toml"))


def load_budget(name: str) -> Budget:
    """``paper/<name>.toml`` -> :class:`Budget` (every table and value type checked, one line each)."""
    path = BUDGET_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(budget_names()) or f"none in {BUDGET_DIR}/ (run from the repository root)"
        raise LinksimError(f"--budget {name!r}: no {path} (budgets: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise LinksimError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise LinksimError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    if not isinstance(data.get("scenario"), str):
        raise LinksimError(f"{path}: scenario: expected the path of a scenario file")
    for key in ("agents", "scenarios", "grids", "changes"):
        table = data.get(key, {})
        if not isinstance(table, dict):
            raise LinksimError(f"{path}: [{key}] must be a table")
        want = dict if key == "changes" else str
        for k, v in table.items():
            if key == "agents" and isinstance(v, list) and v and all(isinstance(f, str) for f in v):
                if len(set(v)) < len(v):
                    raise LinksimError(f"{path}: agents.{k}: a folder is listed twice")
                continue
            if not isinstance(v, want):
                what = {"changes": "a table", "agents": "a folder or a list of folders (one per seed)"}
                raise LinksimError(f"{path}: {key}.{k}: expected {what.get(key, 'a string')}, got {v!r}")
    from .items import DATA
    known = {"changes": sorted(d.name for d in DATA),
             "grids": sorted({s.over[5:] for d in DATA for s in d.sweeps if s.over.startswith("grid:")})}
    for key, names in known.items():
        unknown = sorted(set(data.get(key, {})) - set(names))
        if unknown:
            raise LinksimError(f"{path}: {key}.{unknown[0]}: not a {'data folder' if key == 'changes' else 'grid'}"
                               f" of linksim paper (known: {', '.join(names)})")
    agents = {r: [v] if isinstance(v, str) else list(v) for r, v in data.get("agents", {}).items()}
    return Budget(name, path, data["scenario"], agents, dict(data.get("scenarios", {})),
                  dict(data.get("grids", {})), dict(data.get("changes", {})))
