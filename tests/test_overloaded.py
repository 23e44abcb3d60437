"""Overloaded MIMO (K > M users per BS antenna): the blocks defined there run and the references
still bound them; zf and zf_det refuse it in one line (the sweep's refusals are rows of
tests/test_bad_input.py)."""
import itertools

import numpy as np
import pytest
import torch

from linksim.blocks import get
from linksim.blocks.detectors import constellation_points, random_symbols
from linksim.blocks.precoders import sum_rate
from linksim.chains import DetectionChain, PrecodingChain
from linksim.errors import LinksimError

M, K = 2, 3


@pytest.fixture
def overloaded(tiny_scenario):
    return tiny_scenario(channel={"bs_rows": 1, "bs_cols": M},
                         precoding={"num_users": K, "num_samples": 32},
                         detection={"num_users": K, "bits_per_symbol": 2, "min_samples": 64,
                                    "max_samples": 64, "target_errors": 10 ** 6})


def _h(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) / 2 ** 0.5


def test_precoders_at_k_above_m_are_bounded_by_dpc(overloaded):
    chain = PrecodingChain(overloaded)
    names = ("mrt", "rzf", "wmmse", "dpc_bound")
    acc = chain.run_point({n: get(n, "precoder", overloaded) for n in names}, chain.point())
    r = {n: a["sum_rate"].result()[0] for n, a in acc.items()}
    assert r["mrt"] <= r["wmmse"] and r["rzf"] <= r["wmmse"] <= r["dpc_bound"], r
    # per sample, every precoder meets its budget and stays below the broadcast capacity
    h, p_tx, s2 = _h((16, K, M), 1), 2.0, 0.1
    cap = get("dpc_bound")(h, p_tx, s2)
    for n in ("mrt", "rzf", "wmmse"):
        w = get(n)(h, p_tx, s2)
        assert torch.allclose(w.abs().square().sum((1, 2)), torch.full((16,), p_tx), rtol=1e-4)
        assert (sum_rate(h, w, s2) <= cap + 1e-6).all(), n


def test_detectors_at_k_above_m_against_numpy(overloaded):
    h, noise_var = _h((6, M, K), 2), 0.05
    _, x = random_symbols((6, K, 5), 2, torch.Generator().manual_seed(3))
    y = h @ x + (noise_var ** 0.5) * _h((6, M, 5), 4)
    hn, yn = h.numpy().astype(np.complex128), y.numpy().astype(np.complex128)
    # ML: brute force over the 4^3 QPSK vectors
    pts = constellation_points(2, "cpu", torch.complex128).numpy()
    cands = np.array(list(itertools.product(pts, repeat=K))).T               # [K, 64]
    dist = np.linalg.norm(yn[:, :, :, None] - (hn @ cands)[:, :, None, :], axis=1) ** 2   # [b, T, 64]
    ml = get("ml", num_bits_per_symbol=2, precision="double")(y, h, noise_var).numpy()
    assert np.array_equal(ml, cands[:, dist.argmin(-1)].transpose(1, 0, 2))
    # LMMSE: G = H^H (H H^H + s2 I)^-1, x_hat = diag(G H)^-1 G y
    g = hn.conj().transpose(0, 2, 1) @ np.linalg.inv(hn @ hn.conj().transpose(0, 2, 1) + noise_var * np.eye(M))
    ref = (g @ yn) / np.einsum("bkk->bk", g @ hn)[:, :, None]
    got = get("lmmse", precision="double")(y, h, noise_var).numpy()
    assert np.allclose(got, ref, atol=1e-9)


def test_detection_chain_at_k_above_m_orders_ml_lmmse_mf(overloaded):
    chain = DetectionChain(overloaded)
    acc = chain.run_point({n: get(n, "detector", overloaded) for n in ("mf", "lmmse", "ml")},
                          chain.point("snr_db", 15.0))
    ser = {n: a["ser"].result() for n, a in acc.items()}
    assert ser["ml"][2] < ser["lmmse"][1] and ser["lmmse"][2] < ser["mf"][1], ser   # disjoint 95% CIs


@pytest.mark.parametrize("name, kind, args, why", [
    ("zf", "precoder", lambda: (_h((4, K, M)), 1.0, 0.1), r"zero-forcing needs K <= M.*\(use rzf"),
    ("zf_det", "detector", lambda: (_h((4, M, 5)), _h((4, M, K)), 0.1), r"zero-forcing needs K <= M.*\(use lmmse"),
])
def test_blocks_that_cannot_serve_k_above_m_refuse_a_direct_call(name, kind, args, why):
    """A direct call at K > M is refused in one line that says why and what to use instead (a
    sweep refuses the point before any compute with the block's ``overloaded_why``)."""
    block = get(name, kind=kind)
    assert block.serves_overloaded is False and block.overloaded_why
    with pytest.raises(LinksimError, match=why) as e:
        block(*args())
    assert f"K={K}" in str(e.value)


def test_kbest_at_k_above_m_searches_the_mmse_extended_system():
    """K > M: K-Best with a full list (k = |C|^K) equals a numpy brute force over
    ||y - Hx||^2 + sigma^2 ||x||^2, the MMSE-extended objective; its SER sits between ML's and
    LMMSE's on the same drops."""
    g = torch.Generator().manual_seed(7)
    h = _h((40, M, K), 3).to(torch.complex128)
    idx, x = random_symbols((40, K, 4), 2, g, dtype=torch.complex128)
    nv = 0.05
    noise = torch.complex(torch.randn(40, M, 4, generator=g, dtype=torch.float64),
                          torch.randn(40, M, 4, generator=g, dtype=torch.float64)) * (nv / 2) ** 0.5
    y = h @ x + noise
    got = get("kbest", num_bits_per_symbol=2, k=64, precision="double")(y, h, nv).numpy()
    c = constellation_points(2, "cpu", torch.complex128).numpy()
    cands = np.array(list(itertools.product(c, repeat=K)))                     # [64, K]
    hn, yn = h.numpy(), y.numpy()
    cost = (np.abs(yn[:, None] - np.einsum("bmk,nk->bnm", hn, cands)[..., None]) ** 2).sum(2) \
        + nv * (np.abs(cands) ** 2).sum(1)[None, :, None]                      # [b, 64, T]
    ref = np.moveaxis(cands[cost.argmin(1)], -1, 1)                            # [b, K, T]
    assert np.array_equal(got, ref)


def test_detection_chain_at_k_above_m_kbest_between_ml_and_lmmse(overloaded):
    chain = DetectionChain(overloaded)
    acc = chain.run_point({n: get(n, "detector", overloaded) for n in ("lmmse", "kbest", "ml")},
                          chain.point("snr_db", 15.0))
    ser = {n: a["ser"].result()[0] for n, a in acc.items()}
    assert ser["ml"] <= ser["kbest"] < ser["lmmse"], ser

