"""Sweeps: reproducible files, resume after a kill, results/meta contract, and the physics each
classical curve must show (orderings that follow from theory, measured on small UMa sweeps)."""
import json

import pytest

from linksim.chains import PrecodingChain
from linksim.results import COLUMNS, read_rows
from linksim.sweep import sweep


def _values(rows, metric):
    out = {}
    for r in rows:
        if r["metric"] == metric:
            out.setdefault(r["block"], {})[float(r["x"])] = float(r["value"])
    return out


def test_same_seed_identical_csv_and_contract(tiny_toml, tmp_path):
    path = tiny_toml()
    a = sweep(path, "precoding", ["zf", "mrt"], "tx_power_dbw=-5:5:5", tmp_path / "a", progress=False)
    b = sweep(path, "precoding", ["zf", "mrt"], "tx_power_dbw=-5:5:5", tmp_path / "b", progress=False)
    assert a.csv.read_text() == b.csv.read_text()
    rows = read_rows(a.csv)
    assert list(rows[0]) == list(COLUMNS) and len(rows) == 2 * 3
    assert all(r["n"] == "16" and float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in rows)
    meta = json.loads(a.meta_path.read_text())
    for key in ("scenario", "scenario_hash", "git_commit", "versions", "seed", "device", "wall_time_s"):
        assert key in meta
    assert "bs_rows = 2" in meta["scenario"]


def test_killed_sweep_resumes_to_identical_file(tiny_toml, tmp_path, monkeypatch):
    path = tiny_toml()
    args = ("precoding", ["zf", "wmmse"], "tx_power_dbw=-10:10:5")
    full = sweep(path, *args, tmp_path / "full", progress=False)

    calls = {"n": 0}
    original = PrecodingChain.run_point

    def dies_at_third_point(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(PrecodingChain, "run_point", dies_at_third_point)
    with pytest.raises(KeyboardInterrupt):
        sweep(path, *args, tmp_path / "killed", progress=False)
    assert len(read_rows(tmp_path / "killed" / "results.csv")) == 2 * 2   # two points saved
    monkeypatch.setattr(PrecodingChain, "run_point", original)

    ran = []
    monkeypatch.setattr(PrecodingChain, "run_point",
                        lambda self, blocks, p, progress=None: ran.append(p.x) or original(self, blocks, p, progress))
    resumed = sweep(path, *args, tmp_path / "killed", progress=False)
    assert ran == [0.0, 5.0, 10.0]                    # finished points were skipped
    assert resumed.csv.read_text() == full.csv.read_text()


def test_other_scenario_in_same_dir_is_refused(tiny_toml, tmp_path):
    from linksim.errors import LinksimError
    sweep(tiny_toml(), "precoding", ["mrt"], None, tmp_path / "o", progress=False)
    with pytest.raises(LinksimError, match="another scenario"):
        sweep("scenarios/quick.toml", "precoding", ["mrt"], None, tmp_path / "o", progress=False)


def test_precoding_ordering_zf_wmmse_dpc(tiny_toml, tmp_path):
    """Per point: zf <= wmmse <= dpc_bound (WMMSE starts from a feasible point and only improves;
    DPC capacity bounds every linear precoder); rates rise with power."""
    st = sweep(tiny_toml(), "precoding", ["zf", "wmmse", "dpc_bound"], "tx_power_dbw=-10:10:10",
               tmp_path / "p", progress=False)
    v = _values(read_rows(st.csv), "sum_rate")
    for x in (-10.0, 0.0, 10.0):
        assert v["zf"][x] <= v["wmmse"][x] <= v["dpc_bound"][x]
    assert v["wmmse"][-10.0] < v["wmmse"][0.0] < v["wmmse"][10.0]


def test_detection_lmmse_beats_zf_and_falls_with_snr(tiny_scenario, tmp_path):
    """Unbiased LMMSE has per-stream SINR >= ZF's; on paired draws (same symbols, channels, noise)
    its SER is lower. 4 users on 16 antennas, 64 drops per point."""
    sc = tiny_scenario(channel={"bs_rows": 4}, detection={"num_users": 4, "min_samples": 64,
                                                            "max_samples": 64})
    st = sweep(sc, "detection", ["zf_det", "lmmse"], "snr_db=0:10:5", tmp_path / "d", progress=False)
    rows = read_rows(st.csv)
    ser = _values(rows, "ser")
    for x in (0.0, 5.0, 10.0):
        assert ser["lmmse"][x] <= ser["zf_det"][x]
    assert ser["lmmse"][0.0] > ser["lmmse"][5.0] > ser["lmmse"][10.0]
    assert set(_values(rows, "ber")) == {"zf_det", "lmmse"}


def test_prediction_outdated_worsens_with_speed_and_ar_helps_when_slow(tiny_toml, tmp_path):
    st = sweep(tiny_toml(), "prediction", ["outdated", "ar"], "speed_kmh=10,60", tmp_path / "c",
               progress=False)
    v = _values(read_rows(st.csv), "nmse_db")
    assert v["outdated"][10.0] < v["outdated"][60.0]
    assert v["ar"][10.0] < v["outdated"][10.0]


def test_loop_genie_bounds_outdated(tiny_toml, tmp_path):
    st = sweep(tiny_toml(), "loop", ["outdated+rzf", "genie+rzf"], "speed_kmh=60", tmp_path / "l",
               progress=False)
    v = _values(read_rows(st.csv), "sum_rate")
    assert v["outdated+rzf"][60.0] < v["genie+rzf"][60.0]
    nm = _values(read_rows(st.csv), "nmse_db")
    assert nm["genie+rzf"][60.0] == float("-inf")


def test_detection_each_block_stops_on_its_own_errors(tiny_scenario, tmp_path):
    """sim_ber's rule per block: at 25 dB the matched filter (interference-limited) reaches 50
    errors within min_samples and stops there, LMMSE runs on; MF's counts are those of MF run
    alone for min_samples drops (the same first drops), and its stopping does not change LMMSE's."""
    cfg = {"num_users": 4, "min_samples": 8, "max_samples": 64, "target_errors": 50}
    sc = tiny_scenario(channel={"bs_rows": 4}, detection=cfg)
    both = read_rows(sweep(sc, "detection", ["mf", "lmmse"], "snr_db=25", tmp_path / "b", progress=False).csv)
    short = tiny_scenario(channel={"bs_rows": 4}, detection=cfg | {"max_samples": 8})
    mf = read_rows(sweep(short, "detection", ["mf"], "snr_db=25", tmp_path / "m", progress=False).csv)
    lm = read_rows(sweep(sc, "detection", ["lmmse"], "snr_db=25", tmp_path / "l", progress=False).csv)
    n = {r["block"]: int(r["n"]) for r in both if r["metric"] == "ser"}
    assert n["mf"] < n["lmmse"]
    pick = lambda rows, b: [(r["metric"], r["value"], r["n"]) for r in rows if r["block"] == b]
    assert pick(both, "mf") == pick(mf, "mf")
    assert pick(both, "lmmse") == pick(lm, "lmmse")


def test_loop_pairs_share_a_prediction_without_mixing_predictors(tiny_toml, tmp_path):
    """ar+zf and ar+wmmse share ar's prediction per batch; run together with outdated+zf, every
    row equals the row of the pair run alone."""
    path = tiny_toml()
    both = read_rows(sweep(path, "loop", ["ar+zf", "outdated+zf", "ar+wmmse"], "speed_kmh=60", tmp_path / "t",
                           progress=False).csv)
    for pair in ("ar+zf", "outdated+zf", "ar+wmmse"):
        alone = read_rows(sweep(path, "loop", [pair], "speed_kmh=60", tmp_path / pair, progress=False).csv)
        assert [r for r in both if r["block"] == pair] == alone
