"""The agents shipped in agents/: small, loadable on the scenario they name, and measured."""
from pathlib import Path

import pytest

import linksim
from linksim.agents import TASK_KIND, load_agent, read_agent
from linksim.agents.base import MODELS

AGENTS = sorted(p.parent for p in Path("agents").glob("*/agent.toml"))


@pytest.mark.parametrize("folder", AGENTS, ids=lambda p: p.name)
def test_shipped_agent_loads_on_its_scenario(folder):
    spec = read_agent(folder)
    assert spec.weights.is_file(), f"{folder}: not trained (run linksim train {folder})"
    assert spec.weights.stat().st_size < 10 * 2**20
    task = MODELS[spec.kind][1] if spec.kind in MODELS else None
    block = load_agent(str(folder), TASK_KIND[task], linksim.load_scenario(spec.scenario_path()))
    assert block.name == folder.name
    # the recipe's result was measured on a validation pool, with the classical reference beside it
    ref = {"detection": "val_ser_lmmse", "precoding": "val_sum_rate_wmmse",
           "prediction": "val_nmse_db_outdated"}[task]
    assert ref in spec.result and spec.result["steps"] > 0 and spec.result["wall_time_s"] > 0
