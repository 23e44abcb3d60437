"""The agents shipped in agents/: small, loadable on the scenario they name as every block kind
they were trained for, and measured."""
from pathlib import Path

import pytest

import linksim
from linksim.agents import agent_tasks, read_agent
from linksim.registry import TASK_KIND

AGENTS = sorted(p.parent for p in Path("agents").glob("*/agent.toml"))
REFERENCE_METRIC = {"detection": "val_ser_lmmse", "precoding": "val_sum_rate_wmmse",
                    "prediction": "val_nmse_db_outdated"}


@pytest.mark.parametrize("folder", AGENTS, ids=lambda p: p.name)
def test_shipped_agent_loads_on_its_scenario(folder):
    spec = read_agent(folder)
    assert spec.weights.is_file(), f"{folder}: not trained (run linksim train {folder})"
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and "checkpoint" not in f.parts) \
        < 20 * 2**20
    sc = linksim.load_scenario(spec.scenario_path())
    tasks = agent_tasks(spec)
    for task in tasks:
        block = linksim.blocks.get(f"agent:{folder}", kind=TASK_KIND[task], scenario=sc)
        assert block.name == folder.name and block.kind == TASK_KIND[task]
        # the recipe's result was measured on a validation pool, with the classical reference beside it
        measured = spec.result if len(tasks) == 1 else spec.result[task]
        assert REFERENCE_METRIC[task] in measured
    assert spec.result["steps"] > 0 and spec.result["wall_time_s"] > 0
