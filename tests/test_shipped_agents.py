"""The agents shipped in agents/: small, loadable on the scenario they name as every block kind
they were trained for, and measured."""
from pathlib import Path

import pytest

import linksim
from linksim.agents import agent_tasks, read_agent
from linksim.registry import kind_of

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
        block = linksim.blocks.get(f"agent:{folder}", kind=kind_of(task), scenario=sc)
        assert block.name == folder.name and block.kind == kind_of(task)
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


def test_shipped_agents_load_from_another_cache_folder(tmp_path, monkeypatch):
    """A fingerprint identifies weights, never a path: with ``LINKSIM_CACHE`` somewhere new (the
    converted backbone reached through another folder name, as on another machine), every shipped
    agent still loads as every block kind it was trained for. The random-init backbone once hashed
    its config, which holds the cache folder's path, and failed here."""
    from linksim.llm.files import _gguf_cache_dir, cache_root, smollm2_gguf
    folder, _ = _gguf_cache_dir(smollm2_gguf())            # converted under the current cache
    new = tmp_path / "elsewhere" / "cache"
    (new / "backbones").mkdir(parents=True)
    (new / "backbones" / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
    monkeypatch.setenv("LINKSIM_CACHE", str(new))
    assert cache_root() == new
    for agent in AGENTS:
        spec = read_agent(agent)
        sc = linksim.load_scenario(spec.scenario_path())
        for task in agent_tasks(spec):
            assert linksim.blocks.get(f"agent:{agent}", kind=kind_of(task), scenario=sc).kind == kind_of(task)


def test_agent_scenario_is_found_from_any_working_directory(tmp_path, monkeypatch):
    """agent.scenario is looked up in the agent folder, then each folder above it, then the working
    directory: the shipped agents (``scenarios/quick.toml``, relative to the repository) resolve
    from anywhere, and so do agents naming a file beside them or one in the working directory."""
    repo = Path.cwd()
    shipped = {folder: read_agent(folder).scenario_path() for folder in AGENTS}   # from the root
    assert all(not p.is_absolute() for p in shipped.values())
    beside = tmp_path / "a" / "beside"
    beside.mkdir(parents=True)
    (beside / "s.toml").write_text('name = "s"\n')
    (beside / "agent.toml").write_text('[agent]\narch = "dnn"\nscenario = "s.toml"\n')
    old = tmp_path / "old"
    old.mkdir()
    (old / "agent.toml").write_text('[agent]\narch = "dnn"\nscenario = "here.toml"\n')
    work = tmp_path / "work"
    work.mkdir()
    (work / "here.toml").write_text('name = "here"\n')
    monkeypatch.chdir(work)
    for folder, path in shipped.items():
        assert read_agent(repo / folder).scenario_path() == repo / path
    assert read_agent(beside).scenario_path() == beside / "s.toml"
    assert read_agent(old).scenario_path() == Path("here.toml")        # the working directory, last
