"""Precoders, DPC bound and rate helpers against independent references.

References: closed forms (single user, degraded BC, complex Wishart moments), slow numpy loops,
brute-force grid search of the dual-MAC power split, and the DPC capacity as an upper bound.
Channels are i.i.d. Rayleigh, generated here (not by the code under test).
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import digamma

from linksim.blocks import precoders as pc
from linksim import blocks as registry



LINEAR = ("zf", "rzf", "mrt", "wmmse")
CLASSES = {"zf": pc.ZF, "rzf": pc.RZF, "mrt": pc.MRT, "wmmse": pc.WMMSE}


def rayleigh(b, k, m, seed):
    """i.i.d. CN(0, 1) channel [b, K, M] complex64."""
    g = torch.Generator().manual_seed(seed)
    re = torch.randn(b, k, m, generator=g)
    im = torch.randn(b, k, m, generator=g)
    return torch.complex(re, im) / math.sqrt(2.0)


def power(w):
    return (w.abs().double() ** 2).sum((-2, -1))


def np_sum_rate(h, w, s2):
    """Slow re-derivation: loop over samples and users."""
    h = h.numpy().astype(np.complex128)
    w = w.numpy().astype(np.complex128)
    s2 = np.broadcast_to(np.asarray(s2, dtype=np.float64), (h.shape[0],))
    out = np.zeros(h.shape[0])
    for i in range(h.shape[0]):
        for k in range(h.shape[1]):
            sig = abs(h[i, k] @ w[i, :, k]) ** 2
            intf = sum(abs(h[i, k] @ w[i, :, j]) ** 2 for j in range(h.shape[1]) if j != k)
            out[i] += np.log2(1.0 + sig / (intf + s2[i]))
    return out


# ---------------------------------------------------------------------------------------------

def test_registered_as_precoders():
    for name in LINEAR:
        s = registry.spec(name)
        assert s.kind == "precoder" and s.doc
    s = registry.spec("dpc_bound")
    assert s.kind == "reference" and s.serves == "precoder" and s.doc
    assert isinstance(registry.spec("wmmse").factory(max_iter=3, tol=1e-2), pc.WMMSE)


@pytest.mark.parametrize("name", LINEAR)
def test_power_budget_per_sample(name):
    b, k, m = 32, 4, 8
    h = rayleigh(b, k, m, 1)
    g = torch.Generator().manual_seed(2)
    p_tx = 0.5 + 1.5 * torch.rand(b, generator=g)
    s2 = 10 ** (-torch.rand(b, generator=g) * 3)
    w = CLASSES[name]()(h, p_tx, s2)
    assert w.shape == (b, m, k) and w.dtype == torch.complex64
    assert torch.allclose(power(w), p_tx.double(), rtol=1e-5, atol=0)
    w = CLASSES[name]()(h, 2.0, 0.1)                                   # scalar budget
    assert torch.allclose(power(w), torch.full((b,), 2.0, dtype=torch.float64), rtol=1e-5)


def test_structured_beamformer_power_budget():
    b, k, m = 32, 4, 8
    h = rayleigh(b, k, m, 3)
    g = torch.Generator().manual_seed(4)
    p = torch.rand(b, k, generator=g)
    lam = torch.rand(b, k, generator=g)
    p_tx = 0.5 + torch.rand(b, generator=g)
    w = pc.structured_beamformer(h, p, lam, 0.1, p_tx)
    assert w.shape == (b, m, k) and w.dtype == torch.complex64
    assert torch.allclose(power(w), p_tx.double(), rtol=1e-5, atol=0)
    # per-user powers follow p (rescaled to the budget)
    pu = (w.abs().double() ** 2).sum(-2)
    assert torch.allclose(pu, (p * (p_tx / p.sum(-1))[:, None]).double(), rtol=1e-5, atol=1e-9)


def test_zf_nulls_interference_and_matches_pinv():
    h = rayleigh(64, 4, 16, 5)
    w = pc.ZF()(h, 1.0, 0.1)
    e = (h.to(torch.complex128) @ w.to(torch.complex128)).abs()          # [b, K, K]
    diag = torch.diagonal(e, dim1=-2, dim2=-1)
    off = e * (1 - torch.eye(4, dtype=e.dtype))                          # |h_k w_j|, j != k
    assert (off <= 1e-4 * diag[..., None]).all()
    # equal effective gain for every user (total-power normalisation of the pseudo-inverse)
    ref = np.linalg.pinv(h.numpy().astype(np.complex128))               # [b, M, K]
    ref *= 1.0 / np.sqrt((np.abs(ref) ** 2).sum((-2, -1)))[:, None, None]
    np.testing.assert_allclose(w.numpy(), ref, atol=2e-6)


def test_rzf_and_mrt_match_direct_formulas():
    b, k, m, s2, p_tx = 16, 4, 8, 0.3, 2.0
    h = rayleigh(b, k, m, 6)
    hn = h.numpy().astype(np.complex128)
    hh = np.conj(np.swapaxes(hn, -1, -2))
    # RZF in the antenna domain: (H^H H + a I_M)^-1 H^H
    ref = np.linalg.solve(hh @ hn + (k * s2 / p_tx) * np.eye(m), hh)
    ref *= np.sqrt(p_tx / (np.abs(ref) ** 2).sum((-2, -1)))[:, None, None]
    np.testing.assert_allclose(pc.RZF()(h, p_tx, s2).numpy(), ref, atol=3e-6)
    ref = hh * np.sqrt(p_tx / (np.abs(hh) ** 2).sum((-2, -1)))[:, None, None]
    np.testing.assert_allclose(pc.MRT()(h, p_tx, s2).numpy(), ref, atol=3e-6)


def test_sum_rate_and_sinr_vs_numpy_loop():
    b, k, m = 12, 3, 5
    h = rayleigh(b, k, m, 7)
    g = torch.Generator().manual_seed(8)
    w = torch.complex(torch.randn(b, m, k, generator=g), torch.randn(b, m, k, generator=g))
    s2 = 0.05 + torch.rand(b, generator=g)
    r = pc.sum_rate(h, w, s2)
    assert r.shape == (b,) and r.dtype == torch.float64
    np.testing.assert_allclose(r.numpy(), np_sum_rate(h, w, s2.double()), rtol=1e-10)
    sn = pc.sinr(h, w, 0.2).numpy()
    hn, wn = h.numpy().astype(np.complex128), w.numpy().astype(np.complex128)
    for i in range(b):
        for kk in range(k):
            e = np.abs(hn[i, kk] @ wn[i]) ** 2
            ref = e[kk] / (e.sum() - e[kk] + 0.2)
            assert abs(sn[i, kk] - ref) <= 1e-10 * ref


def test_single_user_all_precoders_reach_capacity():
    h = rayleigh(16, 1, 6, 9)
    s2, p_tx = 0.3, 1.5
    ref = np.log2(1 + p_tx * (np.abs(h.numpy().astype(np.complex128)) ** 2).sum((-2, -1)) / s2)
    for name in LINEAR:
        r = pc.sum_rate(h, CLASSES[name]()(h, p_tx, s2), s2).numpy()
        np.testing.assert_allclose(r, ref, rtol=1e-6)
    np.testing.assert_allclose(pc.DPCBound().sum_rate(h, p_tx, s2).numpy(), ref, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# WMMSE

@pytest.mark.parametrize("k,m,snr_db,tol,max_iter", [(4, 16, 10, 1e-3, 100), (4, 4, 20, 0.0, 60),
                                                      (6, 6, 10, 0.0, 60)])
def test_wmmse_history_never_decreases(k, m, snr_db, tol, max_iter):
    h = rayleigh(64, k, m, 10 + k + m)
    s2 = 10 ** (-snr_db / 10)
    blk = pc.WMMSE(tol=tol, max_iter=max_iter)
    w, hist = blk(h, 1.0, s2, return_history=True)
    assert hist.shape[1] == 64 and hist.dtype == torch.float64
    assert hist is blk.last_history
    d = hist[1:] - hist[:-1]
    assert (d >= -1e-6 * hist[:-1].abs()).all()
    # history ends at the returned precoder's rate (up to the complex64 cast)
    torch.testing.assert_close(pc.sum_rate(h, w, s2), hist[-1], rtol=1e-5, atol=1e-6)
    if tol == 0.0:
        assert hist.shape[0] == max_iter + 1 and (blk.last_iterations == max_iter).all()


def test_wmmse_beats_zf_and_rzf_at_10db():
    h = rayleigh(256, 4, 16, 11)
    s2 = 0.1
    rw = pc.sum_rate(h, pc.WMMSE()(h, 1.0, s2), s2)
    for other in (pc.ZF, pc.RZF):
        ro = pc.sum_rate(h, other()(h, 1.0, s2), s2)
        assert (rw >= ro - 1e-6 * ro).all()
    assert rw.mean() > pc.sum_rate(h, pc.ZF()(h, 1.0, s2), s2).mean() + 0.05


def test_wmmse_low_snr_at_least_mrt():
    h = rayleigh(128, 4, 8, 12)
    s2 = 10.0                                                          # P/sigma^2 = -10 dB
    rm = pc.sum_rate(h, pc.MRT()(h, 1.0, s2), s2)
    # from an MRT start the rate can only grow; from the default RZF start it beats MRT on average
    rw_mrt = pc.sum_rate(h, pc.WMMSE(init="mrt")(h, 1.0, s2), s2)
    assert (rw_mrt >= rm * (1 - 1e-6)).all()
    rw = pc.sum_rate(h, pc.WMMSE()(h, 1.0, s2), s2)
    assert rw.mean() > rm.mean()
    assert (rw >= 0.97 * rm).all()


def test_wmmse_is_per_sample_correct_in_a_batch():
    b = 12
    h = rayleigh(b, 4, 6, 13)
    g = torch.Generator().manual_seed(14)
    p_tx = 0.5 + torch.rand(b, generator=g)
    s2 = 10 ** (-2 * torch.rand(b, generator=g))
    blk = pc.WMMSE()
    w = blk(h, p_tx, s2)
    iters = blk.last_iterations.clone()
    assert iters.min() < iters.max()                                   # samples stop at different times
    for i in range(b):
        wi = blk(h[i:i + 1], float(p_tx[i]), float(s2[i]))
        assert int(blk.last_iterations[0]) == int(iters[i])
        torch.testing.assert_close(pc.sum_rate(h[i:i + 1], wi, float(s2[i])),
                                   pc.sum_rate(h[i:i + 1], w[i:i + 1], float(s2[i])),
                                   rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# optimal structure

def test_structured_beamformer_vs_antenna_domain_formula():
    b, k, m, s2, p_tx = 8, 3, 5, 0.2, 1.3
    h = rayleigh(b, k, m, 15)
    g = torch.Generator().manual_seed(16)
    p = torch.rand(b, k, generator=g)
    lam = 2 * torch.rand(b, k, generator=g)
    w = pc.structured_beamformer(h, p, lam, s2, p_tx).numpy()
    hn, pn, ln = h.numpy().astype(np.complex128), p.numpy().astype(np.float64), lam.numpy()
    for i in range(b):
        a = s2 * np.eye(m) + sum(ln[i, j] * np.outer(hn[i, j].conj(), hn[i, j]) for j in range(k))
        for kk in range(k):
            wt = np.linalg.solve(a, hn[i, kk].conj())
            ref = np.sqrt(pn[i, kk] * p_tx / pn[i].sum()) * wt / np.linalg.norm(wt)
            np.testing.assert_allclose(w[i, :, kk], ref, atol=3e-6)


def test_structure_parameters_reproduce_wmmse():
    h = rayleigh(128, 4, 16, 17)
    s2, p_tx = 0.1, 1.0
    # default WMMSE (tol 1e-3): within 1 % per sample
    w = pc.WMMSE()(h, p_tx, s2)
    p, lam = pc.wmmse_p_lambda(h, w, s2, p_tx)
    assert torch.allclose(lam.sum(-1), torch.full((128,), p_tx, dtype=torch.float64))
    assert (lam >= 0).all() and torch.allclose(p.sum(-1), torch.full((128,), p_tx,
                                                                      dtype=torch.float64), rtol=1e-5)
    r = pc.sum_rate(h, w, s2)
    r2 = pc.sum_rate(h, pc.structured_beamformer(h, p, lam, s2, p_tx), s2)
    assert ((r2 - r).abs() <= 0.01 * r).all()
    # at a (tightly converged) WMMSE fixed point the extraction is exact
    w = pc.WMMSE(tol=1e-7, max_iter=400)(h[:32], p_tx, s2)
    p, lam = pc.wmmse_p_lambda(h[:32], w, s2, p_tx)
    r = pc.sum_rate(h[:32], w, s2)
    r2 = pc.sum_rate(h[:32], pc.structured_beamformer(h[:32], p, lam, s2, p_tx), s2)
    torch.testing.assert_close(r2, r, rtol=1e-5, atol=0)


def test_structured_beamformer_is_differentiable():
    h = rayleigh(4, 3, 6, 18)
    g = torch.Generator().manual_seed(19)
    p0 = (0.2 + torch.rand(4, 3, generator=g)).double()
    l0 = (0.2 + torch.rand(4, 3, generator=g)).double()
    dp = torch.randn(4, 3, generator=g).double()
    dl = torch.randn(4, 3, generator=g).double()

    def f(p, lam):
        return pc.sum_rate(h, pc.structured_beamformer(h, p, lam, 0.1, 1.0), 0.1).sum()

    p, lam = p0.clone().requires_grad_(), l0.clone().requires_grad_()
    f(p, lam).backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(lam.grad).all()
    assert p.grad.abs().sum() > 0 and lam.grad.abs().sum() > 0
    eps = 1e-3
    fd = (f(p0 + eps * dp, l0 + eps * dl) - f(p0 - eps * dp, l0 - eps * dl)) / (2 * eps)
    ad = (p.grad * dp).sum() + (lam.grad * dl).sum()
    assert abs(float(fd - ad)) <= 1e-2 * max(1.0, abs(float(ad)))


# ---------------------------------------------------------------------------------------------
# DPC bound

def test_dpc_is_a_reference_returning_the_capacity():
    blk = registry.get("dpc_bound", kind="precoder")
    assert blk.kind == "reference" and blk.serves == "precoder"
    h = rayleigh(2, 2, 2, 0)
    torch.testing.assert_close(blk(h, 1.0, 0.1), pc.DPCBound().sum_rate(h, 1.0, 0.1))


@pytest.mark.parametrize("k,m", [(4, 8), (4, 4), (3, 16)])
def test_every_precoder_below_dpc(k, m):
    h = rayleigh(64, k, m, 20 + k * m)
    dpc = pc.DPCBound()
    for snr_db in (-10.0, 0.0, 10.0, 20.0, 30.0):
        s2 = 10 ** (-snr_db / 10)
        c = dpc.sum_rate(h, 1.0, s2)
        assert c.shape == (64,) and c.dtype == torch.float64
        assert (dpc.last_gap <= 1e-9).all()
        for name in LINEAR:
            r = pc.sum_rate(h, CLASSES[name]()(h, 1.0, s2), s2)
            assert (r <= c + 1e-6).all(), (name, snr_db)
        w = pc.WMMSE()(h, 1.0, s2)
        p, lam = pc.wmmse_p_lambda(h, w, s2, 1.0)
        r = pc.sum_rate(h, pc.structured_beamformer(h, p, lam, s2, 1.0), s2)
        assert (r <= c + 1e-6).all()


def test_dpc_single_antenna_bs_is_best_user():
    # M = 1: degraded broadcast channel, capacity = serve the strongest user with full power
    h = rayleigh(32, 3, 1, 21)
    ref = np.log2(1 + 2.0 * (np.abs(h.numpy().astype(np.complex128)) ** 2).max((-2, -1)) / 0.5)
    c = pc.DPCBound().sum_rate(h, 2.0, 0.5).numpy()
    # the iterate is feasible (a lower bound) and its duality gap is below tol = 1e-9 bit/s/Hz
    assert (c <= ref + 1e-12).all() and (c >= ref - 1e-9).all()


@pytest.mark.parametrize("m", [2, 3])
def test_dpc_two_users_vs_grid_search(m):
    h = rayleigh(6, 2, m, 22 + m)
    hn = h.numpy().astype(np.complex128)
    p_tot = 1.0
    grid = np.linspace(0.0, p_tot, 20001)
    dpc = pc.DPCBound()
    for s2 in (1.0, 0.1, 0.01):
        c = dpc.sum_rate(h, p_tot, s2).numpy()
        for i in range(h.shape[0]):
            r1 = np.outer(hn[i, 0].conj(), hn[i, 0])
            r2 = np.outer(hn[i, 1].conj(), hn[i, 1])
            a = np.eye(m) + (grid[:, None, None] * r1 + (p_tot - grid)[:, None, None] * r2) / s2
            f = np.linalg.slogdet(a)[1] / np.log(2)
            assert abs(c[i] - f.max()) <= 1e-3
            assert c[i] >= f.max() - 1e-9                              # the grid cannot beat the max


def test_waterfill_vs_bisection():
    g = torch.Generator().manual_seed(23)
    gain = torch.rand(20, 5, generator=g).double() * 10
    gain[0, 2] = 0.0
    p_tot = torch.rand(20, generator=g).double() * 3
    p = pc.waterfill(gain, p_tot).numpy()
    for i in range(20):
        lo, hi = 0.0, 1e3
        for _ in range(200):
            nu = 0.5 * (lo + hi)
            s = np.maximum(nu - 1 / np.maximum(gain[i].numpy(), 1e-300), 0).sum()
            lo, hi = (nu, hi) if s < p_tot[i].item() else (lo, nu)
        ref = np.maximum(nu - 1 / np.maximum(gain[i].numpy(), 1e-300), 0)
        np.testing.assert_allclose(p[i], ref, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# ZF on i.i.d. Rayleigh vs complex-Wishart closed forms

def test_zf_rayleigh_closed_forms():
    n, k, m = 20000, 4, 16
    h = rayleigh(n, k, m, 24)
    w = pc.ZF()(h, 1.0, 0.1).to(torch.complex128)
    e = torch.diagonal(h.to(torch.complex128) @ w, dim1=-2, dim2=-1).abs() ** 2     # [n, K]
    # total-power scaling: |h_k w_k|^2 = P / tr((H H^H)^-1), E[tr(W^-1)] = K / (M - K)
    t = (1.0 / e[:, 0]).numpy()
    assert np.allclose(e.numpy(), e[:, :1].numpy(), rtol=1e-4)             # equal gain per user
    se = t.std() / math.sqrt(n)
    assert abs(t.mean() - k / (m - k)) <= 5 * se
    # per-user normalised gain |h_k w_k|^2 / ||w_k||^2 = 1 / [(H H^H)^-1]_kk ~ Gamma(M-K+1, 1)
    gk = (e / (w.abs() ** 2).sum(-2)).numpy().ravel()
    assert abs(gk.mean() - (m - k + 1)) <= 5 * gk.std() / math.sqrt(n)      # users: 4n, conservative
    lg = np.log(gk)
    assert abs(lg.mean() - digamma(m - k + 1)) <= 5 * lg.std() / math.sqrt(n)


# ---------------------------------------------------------------------------------------------
# precision

def test_double_precision_blocks():
    b, k, m, s2 = 16, 4, 8, 0.1
    h = rayleigh(b, k, m, 25).to(torch.complex128)
    p_tx = (0.5 + torch.rand(b, generator=torch.Generator().manual_seed(26))).double()
    for name in LINEAR:
        single = registry.get(name, precision="single")
        double = registry.get(name, precision="double")
        assert single.cdtype == torch.complex64 and double.cdtype == torch.complex128
        w1, w2 = single(h, p_tx, s2), double(h, p_tx, s2)
        assert w1.dtype == torch.complex64 and w2.dtype == torch.complex128
        torch.testing.assert_close(pc.sum_rate(h, w2, s2), pc.sum_rate(h, w1, s2), rtol=1e-5, atol=0)
    c2 = pc.DPCBound(precision="double")(h, p_tx, s2)
    assert c2.dtype == torch.float64 and c2.shape == (b,)
    torch.testing.assert_close(c2, pc.DPCBound()(h, p_tx, s2), rtol=1e-5, atol=0)
    # structured_beamformer keeps the complex dtype of h
    p, lam = torch.rand(b, k).double(), torch.rand(b, k).double()
    assert pc.structured_beamformer(h, p, lam, s2, p_tx).dtype == torch.complex128
    assert pc.structured_beamformer(h.to(torch.complex64), p, lam, s2, p_tx).dtype == torch.complex64
