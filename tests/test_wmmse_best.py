"""``wmmse_best`` (WMMSE from several starts, best per sample) against independent references.

References: ``wmmse`` itself (a lower bound per sample, and exactly equal with one start), the
DPC sum capacity (an upper bound), the closed-form optimum of linear precoding from a
single-antenna base station, and a slow numpy re-evaluation of the rates it reports.
Channels are i.i.d. Rayleigh, generated here.
"""
import math

import numpy as np
import pytest
import torch

import linksim
from linksim.blocks import precoders as pc
from linksim.blocks.precoders.rates import _gram
from linksim.errors import LinksimError

from conftest import tiny


def rayleigh(b, k, m, seed):
    """i.i.d. CN(0, 1) channel [b, K, M] complex64."""
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(b, k, m, generator=g), torch.randn(b, k, m, generator=g)) / math.sqrt(2)


def np_sum_rate(h, w, s2):
    """Slow re-derivation in numpy: loop over samples and users (SINR with interference as noise)."""
    h, w = h.numpy().astype(np.complex128), w.numpy().astype(np.complex128)
    out = np.zeros(h.shape[0])
    for i in range(h.shape[0]):
        for k in range(h.shape[1]):
            sig = abs(h[i, k] @ w[i, :, k]) ** 2
            intf = sum(abs(h[i, k] @ w[i, :, j]) ** 2 for j in range(h.shape[1]) if j != k)
            out[i] += np.log2(1.0 + sig / (intf + s2))
    return out


CASES = [(4, 16, 1.0, 0.1), (4, 4, 10.0, 0.1), (3, 8, 0.1, 0.1), (6, 8, 3.0, 0.05)]


@pytest.mark.parametrize("k, m, p_tx, s2", CASES)
def test_between_wmmse_and_dpc_at_full_power(k, m, p_tx, s2):
    h = rayleigh(48, k, m, seed=k * m)
    best = pc.WMMSEBest(seed=1)
    w = best(h, p_tx, s2)
    r_best = np_sum_rate(h, w, s2)
    r_wmmse = np_sum_rate(h, pc.WMMSE()(h, p_tx, s2), s2)
    cap = pc.DPCBound()(h, p_tx, s2).numpy()
    assert (r_best >= r_wmmse * (1 - 1e-5)).all(), (r_best - r_wmmse).min()
    assert (r_best <= cap * (1 + 1e-6)).all(), (r_best - cap).max()
    power = w.abs().double().square().sum((1, 2))
    assert torch.allclose(power, torch.full_like(power, p_tx), rtol=1e-5)
    # the rate it reports for the kept start is the rate of the beams it returns
    np.testing.assert_allclose(best.last_rates.max(0).values.numpy(), r_best, rtol=2e-5)


def test_per_sample_budget_and_noise():
    b, k, m = 32, 4, 8
    h = rayleigh(b, k, m, seed=5)
    g = torch.Generator().manual_seed(6)
    p_tx = 0.5 + 4.0 * torch.rand(b, generator=g, dtype=torch.float64)
    s2 = 10 ** (-2 * torch.rand(b, generator=g, dtype=torch.float64))
    w = pc.WMMSEBest(restarts=4, seed=0)(h, p_tx, s2)
    assert torch.allclose(w.abs().double().square().sum((1, 2)), p_tx, rtol=1e-5)
    r_best = pc.sum_rate(h, w, s2)
    r_ref = pc.sum_rate(h, pc.WMMSE()(h, p_tx, s2), s2)
    assert (r_best >= r_ref * (1 - 1e-5)).all()


def test_single_antenna_bs_reaches_the_best_user_closed_form():
    """M = 1: the sum-rate with interference treated as noise is convex in the power split, so
    the best linear precoder serves only the strongest user: R = log2(1 + P max_k |h_k|^2 / s2)."""
    b, k, p_tx, s2 = 200, 3, 1.0, 0.1
    h = rayleigh(b, k, 1, seed=0)
    ref = np.log2(1 + p_tx * h.abs().double().square().max(1).values[:, 0].numpy() / s2)
    r_best = np_sum_rate(h, pc.WMMSEBest(seed=0)(h, p_tx, s2), s2)
    np.testing.assert_allclose(r_best, ref, rtol=1e-5)
    # not vacuous: from its one start, wmmse stops at a worse stationary point on some samples
    r_wmmse = np_sum_rate(h, pc.WMMSE()(h, p_tx, s2), s2)
    assert (ref - r_wmmse).max() > 0.1


def test_one_start_with_wmmse_settings_is_wmmse_bit_for_bit():
    h = rayleigh(24, 4, 8, seed=3)
    for init in ("rzf", "mrt"):
        ref = pc.WMMSE(init=init)
        one = pc.WMMSEBest(restarts=1, tol=1e-3, max_iter=100, init=init, seed=9)
        w_ref, hist_ref = ref(h, 2.0, 0.1, return_history=True)
        w, hist = one(h, 2.0, 0.1, return_history=True)
        assert torch.equal(w, w_ref) and torch.equal(hist, hist_ref)
        assert torch.equal(one.last_iterations, ref.last_iterations)
        assert (one.last_choice == 0).all()


def test_stacked_starts_match_each_start_run_alone():
    """The N starts are stacked into the batch: each must give what WMMSE gives from it alone."""
    h = rayleigh(6, 3, 6, seed=11).to(torch.complex128)
    best = pc.WMMSEBest(restarts=5, seed=2, tol=1e-4, max_iter=300, precision="double")
    best(h, 1.0, 0.1)
    g, ptx, s2 = _gram(h), torch.full((6,), 1.0, dtype=torch.float64), torch.full((6,), 0.1, dtype=torch.float64)
    starts = best._starts(g, s2, ptx).reshape(5, 6, 3, 3)
    for r in range(5):
        _, rate, _, _ = best._iterate(g, starts[r], s2, ptx)
        torch.testing.assert_close(best.last_rates[r], rate, rtol=1e-12, atol=0)


def test_reproducible_seeded_and_monotone_in_restarts():
    h = rayleigh(24, 4, 8, seed=7)
    a = pc.WMMSEBest(restarts=6, seed=3)(h, 2.0, 0.1)
    assert torch.equal(a, pc.WMMSEBest(restarts=6, seed=3)(h, 2.0, 0.1))
    other = pc.WMMSEBest(restarts=6, seed=4)
    b = other(h, 2.0, 0.1)
    assert not torch.equal(a, b) and (other.last_choice > 0).any()
    # the starts of N are among those of N + k: more starts never lower a sample's rate
    few, many = pc.WMMSEBest(restarts=3, seed=3), pc.WMMSEBest(restarts=6, seed=3)
    r_few, r_many = pc.sum_rate(h, few(h, 2.0, 0.1), 0.1), pc.sum_rate(h, many(h, 2.0, 0.1), 0.1)
    assert (r_many >= r_few * (1 - 1e-6)).all()
    torch.testing.assert_close(many.last_rates[:3], few.last_rates, rtol=0, atol=0)


def test_seed_comes_from_the_scenario_and_precision_does_not_change_the_starts():
    h = rayleigh(8, 2, 8, seed=1)
    sc = tiny()
    get = lambda s: linksim.blocks.get("wmmse_best", kind="precoder", scenario=s)  # noqa: E731
    assert get(sc).seed == get(sc).seed != get(sc.replace(run={"seed": 1})).seed
    single, double = get(sc), get(sc.replace(run={"precision": "double"}))
    ws, wd = single(h, 1.0, 0.1), double(h.to(torch.complex128), 1.0, 0.1)
    assert ws.dtype == torch.complex64 and wd.dtype == torch.complex128
    assert torch.equal(single.last_choice, double.last_choice)
    torch.testing.assert_close(ws.to(torch.complex128), wd, rtol=1e-4, atol=1e-4)


def test_registered_as_an_ordinary_precoder_and_bad_options_refused():
    spec = linksim.blocks.spec("wmmse_best")
    assert spec.kind == "precoder" and spec.serves == "precoder" and spec.doc
    assert "wmmse_best" in linksim.blocks.names("precoder")
    for bad in ({"restarts": 0}, {"restarts": 2.5}, {"seed": -1}, {"init": "zf"}, {"max_iter": -3}):
        with pytest.raises(LinksimError, match="wmmse"):
            pc.WMMSEBest(**bad)
