"""Scenarios are validated with one-line errors; the CLI exits 2 with one named line on bad input."""
import subprocess
import sys
from pathlib import Path

import pytest

import linksim
from linksim.cli import main
from linksim.errors import LinksimError
from linksim.scenario import from_dict, load_scenario


def test_shipped_scenarios_load():
    q = load_scenario("scenarios/quick.toml")
    p = load_scenario("scenarios/paper.toml")
    assert q.channel.num_bs_antennas == 16 and q.precoding.num_users == 4
    assert p.channel.num_bs_antennas == 128 and p.detection.num_users == 8
    assert (q.prediction.history, q.prediction.horizon) == (16, 4)
    assert q.channel.num_subcarriers * q.channel.subcarrier_spacing_hz == pytest.approx(8.64e6)
    assert q.hash != p.hash and q.hash == load_scenario("scenarios/quick.toml").hash


@pytest.mark.parametrize("data, match", [
    ({"channel": {"carrier_ghz": 2.4}}, "unknown key 'channel.carrier_ghz'"),
    ({"detection": {"snr_db": "high"}}, "detection.snr_db: expected float"),
    ({"precoding": {"num_users": -1}}, "precoding.num_users = -1 must be > 0"),
    ({"channel": {"model": "inh"}}, "channel.model: expected one of"),
    ({"precodng": {}}, "unknown key 'precodng'"),
    ({"prediction": {"history": 4.5}}, "prediction.history: expected int"),
])
def test_bad_scenarios(data, match):
    with pytest.raises(LinksimError, match=match):
        from_dict(data, "x.toml")


def test_scenario_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[channel\nmodel = 'uma'")
    with pytest.raises(LinksimError, match="bad.toml: not valid TOML"):
        load_scenario(bad)
    with pytest.raises(LinksimError, match="not found"):
        load_scenario(tmp_path / "missing.toml")


def _cli_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("linksim: error: ")
    return err[0]


@pytest.mark.parametrize("argv, named", [
    (["sweep", "missing.toml", "--task", "detection", "--blocks", "lmmse", "--out", "o"], "missing.toml"),
    (["sweep", "scenarios/quick.toml", "--task", "detection", "--blocks", "nope", "--out", "o"], "nope"),
    (["sweep", "scenarios/quick.toml", "--task", "detection", "--blocks", "wmmse", "--out", "o"], "wmmse"),
    (["sweep", "scenarios/quick.toml", "--task", "detection", "--blocks", "lmmse", "--over",
      "snr_db=10:0:5", "--out", "o"], "snr_db=10:0:5"),
    (["sweep", "scenarios/quick.toml", "--task", "detection", "--blocks", "lmmse", "--over",
      "tx_power_dbw=0:1:1", "--out", "o"], "tx_power_dbw"),
    (["sweep", "scenarios/quick.toml", "--task", "detection", "--blocks", "lmmse", "--over",
      "volume=0:1:1", "--out", "o"], "volume"),
    (["sweep", "scenarios/quick.toml", "--task", "detection", "--blocks", "lmmse", "--over",
      "snr_db=a:b:c", "--out", "o"], "snr_db=a:b:c"),
    (["sweep", "scenarios/quick.toml", "--task", "dance", "--blocks", "lmmse", "--out", "o"], "dance"),
    (["sweep", "scenarios/quick.toml", "--task", "loop", "--blocks", "wmmse", "--out", "o"], "PREDICTOR+PRECODER"),
    (["sweep", "scenarios/quick.toml", "--task", "loop", "--blocks", "ar+lmmse", "--out", "o"], "lmmse"),
    (["sweep", "scenarios/quick.toml", "--task", "detection", "--blocks", "agent:nowhere", "--out", "o"], "nowhere"),
    (["plot", "no/such/dir"], "no/such/dir"),
    (["dataset", "scenarios/quick.toml", "--task", "detection", "--n", "0", "--out", "x.h5"], "--n"),
])
def test_cli_bad_input_one_line(capsys, tmp_path, monkeypatch, argv, named):
    monkeypatch.chdir(tmp_path.parent) if argv[1] == "missing.toml" else None
    if "scenarios/quick.toml" in argv:
        argv = [a if a != "o" else str(tmp_path / "o") for a in argv]
    assert named in _cli_error(capsys, argv)


def test_cli_subprocess_no_traceback():
    r = subprocess.run([sys.executable, "-m", "linksim.cli", "sweep", "scenarios/quick.toml", "--task",
                        "precoding", "--blocks", "zf", "--over", "num_users=2.5", "--out", "/tmp/x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == "linksim: error: --over num_users: values must be integers, got 2.5"


def test_list_names_blocks_and_scenarios(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("zf", "rzf", "mrt", "wmmse", "dpc_bound", "lmmse", "zf_det", "mf", "kbest", "ml",
                 "outdated", "ar", "genie", "scenarios/quick.toml"):
        assert name in out
    assert set(linksim.blocks.names("precoder")) >= {"zf", "rzf", "mrt", "wmmse"}
    assert set(linksim.blocks.names("reference")) >= {"dpc_bound", "genie"}


def test_list_outside_the_repository_says_where_it_looked(capsys, tmp_path, monkeypatch):
    """Run from a folder without scenarios/ and agents/, `linksim list` names the folders it
    searched and how to point it at others; given them, it lists what they hold."""
    repo = Path.cwd()
    monkeypatch.chdir(tmp_path)
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"scenarios (*.toml in {tmp_path / 'scenarios'}):\n  none found (no such folder); name the " \
        "folder with --scenarios DIR" in out
    assert f"agents (*/agent.toml in {tmp_path / 'agents'}, use as agent:PATH):\n  none found (no such " \
        "folder); name the folder with --agents DIR" in out
    assert main(["list", "--scenarios", str(repo / "scenarios"), "--agents", str(repo / "agents")]) == 0
    out = capsys.readouterr().out
    assert str(repo / "scenarios" / "quick.toml") in out and f"agent:{repo / 'agents' / 'oampnet'}" in out
    assert "none found" not in out


def test_demo_prints_the_numbers_it_drew(capsys, tiny_toml, tmp_path, monkeypatch):
    """`linksim demo` (here with two small sweeps) prints, per sweep, each block's main metric at
    the first and last grid point, then the figures."""
    import linksim.campaigns

    monkeypatch.setitem(linksim.campaigns.CAMPAIGNS, "demo", (
        ("pre", None, "precoding", "zf,dpc_bound", "tx_power_dbw=-10,10"),
        ("cp", None, "prediction", "outdated,ar", "speed_kmh=10,100"),
    ))
    assert main(["demo", "--scenario", tiny_toml(), "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {(r["block"], float(r["x"])): float(r["value"])
            for r in linksim.results.read_rows(tmp_path / "pre" / "results.csv")}
    assert out[:3] == ["pre: sum_rate at tx_power_dbw = -10 -> 10",
                       f"  zf         {rows[('zf', -10.0)]:.3g} -> {rows[('zf', 10.0)]:.3g}",
                       f"  dpc_bound  {rows[('dpc_bound', -10.0)]:.3g} -> {rows[('dpc_bound', 10.0)]:.3g}"]
    assert out[3] == "cp: nmse_db at speed_kmh = 10 -> 100" and out[4].startswith("  outdated  ")
    assert out[6] == str(tmp_path / "pre" / "precoding_sum_rate_vs_tx_power_dbw.png")
