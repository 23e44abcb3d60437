"""The sweep as plan -> run -> store: a plan travels to another process and gives the same rows
there; the store appends finished points, so even ``kill -9`` loses only the point in progress, and
refuses a damaged file instead of overwriting it."""
import multiprocessing
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import linksim
from linksim.errors import LinksimError
from linksim.results import ResultsStore, read_rows
from linksim.sweep import get_backend, plan, run_point, sweep

ARGS = ("precoding", ["zf", "wmmse"], "tx_power_dbw=-10:10:5")


def _rows_in_child(the_plan, spec, labels):
    return run_point(the_plan, spec, labels)


def test_a_point_runs_in_another_process_with_the_same_rows(tiny_toml):
    sc = linksim.load_scenario(tiny_toml())
    the_plan, _ = plan(sc, "loop", ["ar+wmmse", "outdated+zf"], "speed_kmh=30,60")
    again = pickle.loads(pickle.dumps(the_plan))             # names and numbers only
    assert again.blocks == the_plan.blocks and again.scenario.hash == sc.hash
    spec = the_plan.points[1]
    here = run_point(the_plan, spec, list(the_plan.blocks))
    with multiprocessing.get_context("spawn").Pool(1) as pool:   # a fresh interpreter
        there = pool.apply(_rows_in_child, (the_plan, spec, list(the_plan.blocks)))
    assert there == here and {r["block"] for r in here} == {"ar+wmmse", "outdated+zf"}


def test_plan_checks_everything_before_any_compute(tiny_toml, monkeypatch):
    sc = linksim.load_scenario(tiny_toml())
    with pytest.raises(LinksimError, match="unknown block 'nope'"):
        plan(sc, "precoding", ["zf", "nope"], "tx_power_dbw=0,5")
    with pytest.raises(LinksimError, match="unknown task 'precode'"):
        plan(sc, "precode", ["zf"], None)
    with pytest.raises(LinksimError, match="--backend 'spark'"):
        get_backend("spark")


KILLER = """
import os, signal, sys
from linksim.results import ResultsStore
from linksim.sweep import sweep
add, calls = ResultsStore.add, []
def add_then_die(self, rows):
    add(self, rows)
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)      # no cleanup, no finally: as kill -9
ResultsStore.add = add_then_die
sweep(sys.argv[1], "precoding", ["zf", "wmmse"], "tx_power_dbw=-10:10:5", sys.argv[2], progress=False)
"""


def test_kill_9_loses_only_the_point_in_progress(tiny_toml, tmp_path):
    path = tiny_toml()
    full = sweep(path, *ARGS, tmp_path / "full", progress=False)
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER, path, str(killed)], capture_output=True)
    assert proc.returncode == -9
    assert len(read_rows(killed / "results.csv")) == 2 * 2              # two points, appended
    resumed = sweep(path, *ARGS, killed, progress=False)
    assert resumed.csv.read_text() == full.csv.read_text()              # sorted again, identical


def test_a_torn_last_line_is_dropped_and_its_point_rerun(tiny_toml, tmp_path):
    path = tiny_toml()
    full = sweep(path, *ARGS, tmp_path / "full", progress=False)
    out = tmp_path / "torn"
    out.mkdir()
    lines = full.csv.read_text().splitlines(keepends=True)
    keep = [lines[0]] + [ln for ln in lines[1:] if ",-10," in ln] + ["precoding,zf,tx_power_dbw,-5,sum_ra"]
    (out / "results.csv").write_text("".join(keep))
    assert len(ResultsStore(out).rows) == 2                             # the cut line is gone
    assert sweep(path, *ARGS, out, progress=False).csv.read_text() == full.csv.read_text()


@pytest.mark.parametrize("damage", [
    "precoding,zf,tx_power_dbw,-5,sum_rate,garbage,1,2,16\n",          # a value that is no number
    "precoding,zf\n",                                                   # a short row
])
def test_a_damaged_results_file_is_refused_and_kept(tiny_toml, tmp_path, damage):
    path = tiny_toml()
    out = sweep(path, "precoding", ["zf"], "tx_power_dbw=-10", tmp_path / "d", progress=False).csv
    text = out.read_text() + damage
    out.write_text(text)
    with pytest.raises(LinksimError, match="line 3 is not a results row.*move it away"):
        sweep(path, *ARGS, tmp_path / "d", progress=False)
    assert out.read_text() == text                                      # never overwritten


def test_binary_results_file_is_one_line_error(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(LinksimError, match="not UTF-8"):
        ResultsStore(tmp_path)


def test_block_options_it_does_not_take_are_refused():
    with pytest.raises(LinksimError, match=r"block 'wmmse': unknown option\(s\) max_itr .*max_iter"):
        linksim.blocks.get("wmmse", max_itr=5)
    assert linksim.blocks.get("wmmse", max_iter=5).max_iter == 5


def test_the_bar_moves_within_a_slow_batch_and_counts_only_drops_run_now(tiny_toml, tmp_path, monkeypatch):
    """``ml`` reports its progress per chunk, so the sweep's bar moves inside a batch (at its
    defaults one batch of ``ml`` takes minutes); chunking changes no number. A resumed sweep's bar
    leaves the resumed points out, and a point that stops early takes its unrun drops off the
    total, so the bar counts (and rates) only drops computed in this run."""
    from linksim.blocks.detectors import tree
    from linksim.sweep import Progress

    seen = []
    real_init, real_show = Progress.__init__, Progress._show

    def init(self, total, batch, desc, enabled, points=0):
        real_init(self, total, batch, desc, enabled, points)
        seen.append(("start", total, desc))

    def show(self, n):
        seen.append(("n", n, self.bar.total))
        real_show(self, n)

    monkeypatch.setattr(Progress, "__init__", init)
    monkeypatch.setattr(Progress, "_show", show)
    args = ("detection", ["lmmse", "ml"], "snr_db=0,30")
    whole = read_rows(sweep(tiny_toml(), *args, tmp_path / "whole", progress=False).csv)
    seen.clear()
    monkeypatch.setattr(tree, "_ML_CHUNK_ELEMENTS", 256 * 2 * 100)    # 100 symbol vectors a chunk
    chunked = read_rows(sweep(tiny_toml(), *args, tmp_path / "chunked", progress=False).csv)
    assert chunked == whole
    shown = [n for what, n, _ in seen if what == "n"]
    assert shown == sorted(shown) and shown[-1] == 16 + 8         # snr 0: 8 drops (errors), 30: 16
    assert set(range(1, 8)) <= set(shown)                          # inside the first 8-drop batch
    # resumed: the finished point is left out, the early stop shrinks the total
    sweep(tiny_toml(), "detection", ["lmmse"], "snr_db=0", tmp_path / "resumed", progress=False)
    seen.clear()
    sweep(tiny_toml(), "detection", ["lmmse"], "snr_db=0,30", tmp_path / "resumed", progress=False)
    assert seen[0] == ("start", 16, "detection 1 block(s), 1 point(s) resumed")
    assert seen[-1][1:] == (16, 16)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_follow_the_umask_as_figures_do(tiny_toml, tmp_path, umask):
    """results.csv (appended, then rewritten sorted), meta.json, figures and a retrained agent's
    agent.toml all get the permissions of a new file under the umask (0644 under 022), never
    mkstemp's private 0600."""
    import os
    import stat

    from linksim.agents.spec import read_agent, write_result
    from linksim.plots import plot_dir

    out, agent = tmp_path / "o", tmp_path / "agent"
    agent.mkdir()
    (agent / "agent.toml").write_text(f'[agent]\narch = "dnn"\nscenario = "{tiny_toml()}"\n')
    old = os.umask(umask)
    try:
        sweep(tiny_toml(), "precoding", ["zf"], "tx_power_dbw=5", out, progress=False)
        appended = stat.S_IMODE((out / "results.csv").stat().st_mode)
        sweep(tiny_toml(), "precoding", ["zf"], "tx_power_dbw=5,0", out, progress=False)   # re-sorted
        files = [out / "results.csv", out / "meta.json", *plot_dir(out)]
        write_result(read_agent(agent), {"steps": 1})
        files.append(agent / "agent.toml")
    finally:
        os.umask(old)
    assert appended == 0o666 & ~umask
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
        {p.name: oct(0o666 & ~umask) for p in files}


def test_a_curve_with_no_finite_point_is_left_out_and_the_figure_says_so(tmp_path, monkeypatch):
    """The loop's NMSE figure has no legend entry for ``genie`` (NMSE −inf dB: nothing to draw);
    its title says why. Figures where every curve is finite keep all of them."""
    from matplotlib.figure import Figure

    from linksim.plots import plot_dir

    lines = ["task,block,x_name,x,metric,value,ci_low,ci_high,n"]
    for x in (10, 100):
        lines += [f"loop,genie+wmmse,speed_kmh,{x},nmse_db,-inf,-inf,-inf,4",
                  f"loop,genie+wmmse,speed_kmh,{x},sum_rate,16,15.5,16.5,4",
                  f"loop,outdated+wmmse,speed_kmh,{x},nmse_db,{-x / 10},{-x / 10 - 1},{-x / 10 + 1},4",
                  f"loop,outdated+wmmse,speed_kmh,{x},sum_rate,{20 - x / 10},{19 - x / 10},{21 - x / 10},4"]
    (tmp_path / "results.csv").write_text("\n".join(lines) + "\n")
    drawn = {}
    real = Figure.savefig

    def savefig(self, fname, **kw):
        ax = self.axes[0]
        drawn[Path(fname).stem] = (ax.get_title(), [t.get_text() for t in ax.get_legend().get_texts()])
        return real(self, fname, **kw)

    monkeypatch.setattr(Figure, "savefig", savefig)
    plot_dir(tmp_path)
    assert drawn["loop_nmse_db_vs_speed_kmh"] == (
        "loop: NMSE [dB]\ngenie+wmmse: exact (−∞ dB), not drawn", ["outdated+wmmse"])
    assert drawn["loop_sum_rate_vs_speed_kmh"] == ("loop: Sum-rate [bit/s/Hz]", ["genie+wmmse", "outdated+wmmse"])
