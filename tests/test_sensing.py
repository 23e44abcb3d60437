"""The sensing tasks (los, beam, pathloss, position): their side information, metrics and classical
blocks, each against a reference independent of the code under test (numpy re-derivations, hand
counts, exact limits), and a small sweep of each through the CLI."""
import math

import numpy as np
import pytest
import torch

import linksim
from linksim.blocks.sensing import BeamSearch
from linksim.channel.modalities import dft_codebook
from linksim.chains import chain_class
from linksim.cli import main
from linksim.metrics import F1, Quantile
from linksim.results import read_rows

from conftest import tiny

SMALL = {t: {"num_samples": 8} for t in ("los", "beam", "pathloss", "position")}
SC = tiny(**SMALL)


class Fixed(torch.nn.Module):
    """A block of any sensing kind that returns ``fn(obs, batch)``."""

    kind = "test"

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, obs):
        return self.fn(obs)


def _batch(task, sc=SC):
    chain = chain_class(task)(sc)
    return chain, next(iter(chain.batches(chain.point())))


def _measure(chain, block, batch):
    acc = chain.new_metrics(block)
    chain.measure(block, batch, acc)
    return {m: a.result() for m, a in acc.items()}


def test_side_information_keeps_sample_and_matches_the_3gpp_formula_in_numpy():
    sc = linksim.load_scenario("scenarios/quick.toml")
    src = linksim.ChannelSource(sc)
    h, info = src.sample_with_info(3, num_time=2, seed=1)
    # same seeds -> same H (on fresh sources: Sionna keeps state between calls of one shape)
    assert torch.equal(h, linksim.ChannelSource(sc).sample(3, num_time=2, seed=1))
    assert not info["los"].any()                                        # quick.toml: NLOS
    h, info = src.sample_with_info(16, num_time=1, seed=2, los="random")
    assert info["los"].any() and not info["los"].all()
    # TR 38.901 Table 7.4.1-1 UMa, re-derived in numpy (h_E = 1 m for 1.5 m UTs)
    d2, hb, hu = info["distance_2d"].double().numpy(), info["bs_height"].double().numpy()[:, None], 1.5
    d3 = np.sqrt(d2 ** 2 + (hb - hu) ** 2)
    fc = sc.channel.carrier_hz
    dbp = 4 * (hb - 1) * (hu - 1) * fc / 299792458.0
    los = np.where(d2 < dbp, 28 + 22 * np.log10(d3) + 20 * np.log10(fc / 1e9),
                   28 + 40 * np.log10(d3) + 20 * np.log10(fc / 1e9) - 9 * np.log10(dbp ** 2 + (hb - hu) ** 2))
    nlos = np.maximum(los, 13.54 + 39.08 * np.log10(d3) + 20 * np.log10(fc / 1e9) - 0.6 * (hu - 1.5))
    want = np.where(info["los"].numpy(), los, nlos)
    np.testing.assert_allclose(info["pathloss_db"].double().numpy(), want, atol=1e-3)
    np.testing.assert_allclose(np.hypot(*info["position"].double().numpy().transpose(2, 0, 1)), d2, rtol=1e-5)
    np.testing.assert_allclose(info["gain_db"], info["shadowing_db"] - info["pathloss_db"], atol=1e-4)
    with pytest.raises(linksim.LinksimError, match="no topology"):
        linksim.ChannelSource(sc.replace(channel={"model": "rayleigh"})).sample_with_info(1)


def test_dft_codebook_is_orthonormal_and_oversampled_sizes():
    w = dft_codebook(SC.channel, 1)
    torch.testing.assert_close(w @ w.mH, torch.eye(8, dtype=w.dtype), atol=1e-5, rtol=0)
    assert dft_codebook(SC.channel, 2).shape == (32, 8)


def test_los_accuracy_and_f1_against_a_hand_count():
    chain, batch = _batch("los")
    p = torch.rand(batch["truth"].shape, generator=torch.Generator().manual_seed(0))
    got = _measure(chain, Fixed(lambda obs: p), batch)
    pred, truth = (p > 0.5).numpy(), batch["truth"].numpy()
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    assert got["accuracy"][0] == (pred == truth).mean() and got["accuracy"][3] == truth.size
    assert got["f1"][0] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # the truth itself: accuracy 1, F1 1
    perfect = _measure(chain, Fixed(lambda obs: batch["truth"].float()), batch)
    assert perfect["accuracy"][0] == 1.0 and perfect["f1"][0] == 1.0


def test_f1_metric_counts():
    f = F1()
    f.update(torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool), torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool))
    value, lo, hi, n = f.result()
    assert (f.tp, f.fp, f.fn, f.tn, n) == (2, 1, 1, 1, 5) and value == pytest.approx(4 / 6) and lo <= value <= hi


def test_quantile_against_numpy_order_statistic():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = Quantile(0.9)
    q.update(x[:400])
    q.update(x[400:])
    value, lo, hi, n = q.result()
    assert value == np.quantile(x.numpy(), 0.9, method="inverted_cdf") and lo < value < hi and n == 1000


def test_beam_search_limit_has_zero_loss_and_top1_against_numpy():
    chain, batch = _batch("beam")
    ref = _measure(chain, BeamSearch(), batch)
    assert ref["gain_loss_db"][0] == 0.0 and ref["top1_accuracy"][0] == 1.0 and ref["top3_accuracy"][0] == 1.0
    last = linksim.blocks.get("last_beam", "beam_selector", SC)
    got = _measure(chain, last, batch)
    g = batch["truth"].double().numpy()
    s = last({"csi_history": batch["csi_history"]}).double().numpy()
    pick, best = s.argmax(-1), g.argmax(-1)
    top3 = np.argsort(-s, -1)[..., :3]
    assert got["top1_accuracy"][0] == (pick == best).mean()
    assert got["top3_accuracy"][0] == (top3 == best[..., None]).any(-1).mean()
    loss = 10 * np.log10(g.max(-1) / np.take_along_axis(g, pick[..., None], -1)[..., 0])
    assert got["gain_loss_db"][0] == pytest.approx(loss.mean(), abs=1e-5) and got["gain_loss_db"][0] >= 0


def test_uma_formula_rmse_against_numpy_on_reported_distances():
    sc = SC.replace(pathloss={"gnss_std_m": 3.0})
    chain, batch = _batch("pathloss", sc)
    for state in ("nlos", "mixed"):
        got = _measure(chain, linksim.blocks.get("uma_formula", "pathloss_estimator", sc, state=state), batch)
        d2 = np.maximum(np.linalg.norm(batch["gnss"].double().numpy(), axis=-1), 10.0)
        hb, hu, fc = batch["bs_height"].double().numpy()[:, None], 1.5, sc.channel.carrier_hz
        d3 = np.sqrt(d2 ** 2 + (hb - hu) ** 2)
        dbp = 4 * (hb - 1) * (hu - 1) * fc / 299792458.0
        los = np.where(d2 < dbp, 28 + 22 * np.log10(d3) + 20 * np.log10(fc / 1e9),
                       28 + 40 * np.log10(d3) + 20 * np.log10(fc / 1e9) - 9 * np.log10(dbp ** 2 + (hb - hu) ** 2))
        nlos = np.maximum(los, 13.54 + 39.08 * np.log10(d3) + 20 * np.log10(fc / 1e9))
        p = np.where(d2 <= 18, 1.0, 18 / d2 + np.exp(-d2 / 63) * (1 - 18 / d2))
        pl = nlos if state == "nlos" else p * los + (1 - p) * nlos
        rmse = np.sqrt(np.mean((-pl - batch["truth"].double().numpy()) ** 2))
        assert got["rmse_db"][0] == pytest.approx(rmse, rel=1e-4) and got["rmse_db"][3] == pl.size


def test_position_perfect_is_zero_and_knn_k1_on_its_training_set_is_zero():
    chain, batch = _batch("position")
    perfect = _measure(chain, Fixed(lambda obs: batch["truth"]), batch)
    assert perfect["pos_err_m"][0] == 0.0 and perfect["pos_err_p90_m"][0] == 0.0
    knn = linksim.blocks.get("knn", "positioner", SC, k=1, fit_drops=6)
    from linksim.blocks.sensing.base import fit_drops
    obs, info = fit_drops(SC, "position", 6, SC.run.seed, "knn")                # its own training drops
    xy = knn({"rsrp": obs["rsrp"]})
    assert torch.equal(xy, info["position"])
    # GNSS alone: mean error ~ sigma sqrt(pi/2)
    gnss = _measure(chain, linksim.blocks.get("gnss_report", "positioner", SC), batch)
    assert gnss["pos_err_m"][0] == pytest.approx(10 * math.sqrt(math.pi / 2), rel=0.5)


def test_fitted_blocks_are_deterministic_from_their_seed():
    a = linksim.blocks.get("kfactor", "los_classifier", SC, fit_drops=8)
    b = linksim.blocks.get("kfactor", "los_classifier", SC, fit_drops=8)
    c = linksim.blocks.get("kfactor", "los_classifier", SC, fit_drops=8, seed=5)
    assert a.threshold_db == b.threshold_db != c.threshold_db


@pytest.mark.parametrize("task, blocks, metrics", [
    ("los", "kfactor", {"accuracy", "f1"}),
    ("beam", "last_beam,beam_search", {"top1_accuracy", "top3_accuracy", "gain_loss_db"}),
    ("pathloss", "uma_formula,rsrp_power", {"rmse_db"}),
    ("position", "angle_power,knn,gnss_report", {"pos_err_m", "pos_err_p90_m"}),
])
def test_sweep_of_each_sensing_task_through_the_cli(tiny_toml, tmp_path, task, blocks, metrics):
    toml = tiny_toml(f"\n[{task}]\nnum_samples = 8\n")
    out = tmp_path / task
    assert main(["sweep", toml, "--task", task, "--blocks", blocks, "--over", "snr_db=0,20", "--out", str(out),
                 "--quiet"]) == 0
    rows = read_rows(out / "results.csv")
    assert {r["metric"] for r in rows} == metrics
    assert {r["block"] for r in rows} == set(blocks.split(","))
    assert all(math.isfinite(float(r["value"])) and int(r["n"]) == 8 * 4 for r in rows)
    if task == "beam":
        assert all(float(r["value"]) == 0 for r in rows if r["block"] == "beam_search" and r["metric"] == "gain_loss_db")
