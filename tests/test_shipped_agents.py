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


def test_sweep_checks_every_points_sizes_before_running(tmp_path):
    """agents/cnn serves K = 4 only, agents/cnn-padded K = 3..8 (zero-padded to 8): a K sweep with
    the first is refused before any compute, naming the point; the second runs every point."""
    from linksim.errors import LinksimError
    from linksim.sweep import sweep
    with pytest.raises(LinksimError, match="--over num_users=5: agent:cnn: .*num_users=4"):
        sweep("scenarios/quick.toml", "precoding", ["agent:agents/cnn"], "num_users=4:5:1", tmp_path / "a",
              progress=False)
    assert not (tmp_path / "a" / "results.csv").exists()
    sc = linksim.load_scenario("scenarios/quick.toml").replace(precoding={"num_samples": 32})
    st = sweep(sc, "precoding", ["agent:agents/cnn-padded"], "num_users=3,8", tmp_path / "b", progress=False)
    assert {float(r["x"]) for r in linksim.results.read_rows(st.csv)} == {3.0, 8.0}
