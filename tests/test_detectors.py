"""Detectors against independent references: closed-form ZF SER, a numpy LMMSE, brute-force ML."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from linksim import blocks as registry
from linksim.blocks.detectors import (KBestDetector, LMMSEDetector, MFDetector, MLDetector,
                                      ZFDetector, constellation_points, hard_decision,
                                      random_symbols, symbols_to_bits)
from linksim.errors import LinksimError


def _qam16_numpy() -> np.ndarray:
    """16-QAM points built here (not from Sionna): {+-1, +-3}^2 / sqrt(10)."""
    lv = np.array([-3.0, -1.0, 1.0, 3.0])
    return (lv[:, None] + 1j * lv[None, :]).reshape(-1) / math.sqrt(10)


def _draw(seed, b, m, k, t, snr_db, bits=4):
    """i.i.d. Rayleigh uplink: h [b,M,K] CN(0,1), x [b,K,T] QAM, y = h x + n."""
    g = torch.Generator().manual_seed(seed)
    h = torch.complex(torch.randn(b, m, k, generator=g), torch.randn(b, m, k, generator=g)) / math.sqrt(2)
    idx, x = random_symbols((b, k, t), bits, g)
    nv = 10 ** (-snr_db / 10)
    n = torch.complex(torch.randn(b, m, t, generator=g), torch.randn(b, m, t, generator=g)) * math.sqrt(nv / 2)
    return h, idx, x, h @ x + n, nv


def _errors_per_sample(x_hat, x):
    """Symbol errors of each drop (the drop shares H, so drops are the independent units)."""
    dec = torch.as_tensor(_nearest_numpy(x_hat.numpy())).to(torch.complex64)
    return (~torch.isclose(dec, x, atol=1e-4)).sum(dim=(1, 2)).double()


def _nearest_numpy(x_hat: np.ndarray) -> np.ndarray:
    pts = _qam16_numpy()
    return pts[np.abs(x_hat[..., None] - pts).argmin(-1)]


def _ser_16qam_awgn(gamma):
    """Exact 16-QAM SER at symbol SNR gamma (Es/N0): 3Q - 2.25Q^2, Q = Q(sqrt(gamma/5))."""
    q = 0.5 * special.erfc(np.sqrt(gamma / 5.0) / math.sqrt(2.0))
    return 3.0 * q - 2.25 * q * q


def _ser_zf_rayleigh(m, k, snr_db):
    """ZF on i.i.d. Rayleigh: post-ZF SNR ~ Gamma(M-K+1, scale=1/noise_var); average the SER."""
    nv = 10 ** (-snr_db / 10)
    dist = stats.gamma(a=m - k + 1, scale=1.0 / nv)
    val, _ = integrate.quad(lambda g: _ser_16qam_awgn(g) * dist.pdf(g), 0, np.inf, limit=200)
    return val


def test_registered_names_and_kinds():
    assert {"lmmse", "zf_det", "mf", "kbest", "ml"} <= set(registry.names("detector"))
    for name in ("lmmse", "zf_det", "mf", "kbest", "ml"):
        assert registry.spec(name).kind == "detector"
        det = registry.get(name, num_bits_per_symbol=6)
        assert isinstance(det, torch.nn.Module) and det.num_bits_per_symbol == 6
        with pytest.raises(LinksimError, match=f"block .{name}.: unknown option.* horizon"):
            registry.get(name, num_bits_per_symbol=6, horizon=4)        # not silently dropped


@pytest.mark.parametrize("snr_db", [6.0, 9.0, 12.0])
def test_zf_ser_matches_closed_form_rayleigh(snr_db):
    m, k, t, b = 8, 4, 1, 40000
    h, idx, x, y, nv = _draw(1000 + int(snr_db), b, m, k, t, snr_db)
    x_hat = ZFDetector()(y, h, nv)
    assert x_hat.shape == (b, k, t) and x_hat.dtype == torch.complex64
    e = _errors_per_sample(x_hat, x)
    ser = e.sum().item() / (b * k * t)
    se = e.std().item() / math.sqrt(b) / (k * t)          # drop-level (cluster) standard error
    ref = _ser_zf_rayleigh(m, k, snr_db)
    assert ref > 1e-3                                     # enough errors to be a real check
    print(f"ZF {snr_db} dB: SER {ser:.5f} closed form {ref:.5f} (se {se:.5f})")
    assert abs(ser - ref) < 4 * se, (snr_db, ser, ref, se)


@pytest.mark.parametrize("snr_db", [3.0, 9.0])
def test_lmmse_matches_numpy_and_beats_zf(snr_db):
    m, k, t, b = 8, 4, 4, 6000
    h, idx, x, y, nv = _draw(2000 + int(snr_db), b, m, k, t, snr_db)
    x_lmmse = LMMSEDetector()(y, h, nv)
    x_zf = ZFDetector()(y, h, nv)

    # independent numpy LMMSE in float64: W = (H^H H + s2 I)^-1 H^H, unbiased by diag(W H)
    hn, yn = h.numpy().astype(np.complex128), y.numpy().astype(np.complex128)
    hh = np.conj(np.swapaxes(hn, 1, 2))
    w = np.linalg.solve(hh @ hn + nv * np.eye(k), hh)
    d = np.einsum("bkk->bk", w @ hn)
    x_np = (w @ yn) / d[:, :, None]
    assert np.abs(x_lmmse.numpy() - x_np).max() < 1e-3
    dec_t, dec_np = _nearest_numpy(x_lmmse.numpy()), _nearest_numpy(x_np)
    assert np.mean(~np.isclose(dec_t, dec_np)) < 1e-4

    e_l, e_z = _errors_per_sample(x_lmmse, x), _errors_per_sample(x_zf, x)
    ser_l = e_l.sum().item() / (b * k * t)
    ser_np = np.mean(~np.isclose(dec_np, x.numpy(), atol=1e-4))
    assert abs(ser_l - ser_np) < 1e-4
    diff = e_l - e_z                                      # paired per drop
    assert diff.mean().item() < 0
    assert diff.mean().item() + 3 * diff.std().item() / math.sqrt(b) < 0


def test_mf_is_unbiased_matched_filter():
    h, idx, x, y, nv = _draw(7, 64, 16, 3, 5, 20.0)
    x_mf = MFDetector()(y, h, nv).numpy()
    hn = h.numpy()
    ref = (np.conj(np.swapaxes(hn, 1, 2)) @ y.numpy()) / (np.abs(hn) ** 2).sum(1)[:, :, None]
    assert np.abs(x_mf - ref).max() < 1e-4


def _brute_force_ml(y: np.ndarray, h: np.ndarray) -> np.ndarray:
    """argmin_x ||y - Hx||^2 over all 16-QAM vectors, float64; y [b,M,T], h [b,M,K] -> [b,K,T]."""
    k = h.shape[-1]
    pts = _qam16_numpy()
    cand = np.array(list(itertools.product(pts, repeat=k))).T          # [K, 16^K]
    out = np.empty((y.shape[0], k, y.shape[2]), dtype=np.complex128)
    for i in range(y.shape[0]):
        res = y[i][:, :, None] - (h[i] @ cand)[:, None, :]            # [M, T, 16^K]
        best = (np.abs(res) ** 2).sum(0).argmin(-1)                    # [T]
        out[i] = cand[:, best]
    return out


@pytest.mark.parametrize("m", [2, 6])
def test_ml_equals_brute_force_and_kbest_exhaustive_equals_ml(m):
    b, k, t = 200, 2, 3
    h, idx, x, y, nv = _draw(3000 + m, b, m, k, t, 4.0)
    x_ml = MLDetector()(y, h, nv)
    ref = _brute_force_ml(y.numpy().astype(np.complex128), h.numpy().astype(np.complex128))
    assert np.mean(~np.isclose(x_ml.numpy(), ref, atol=1e-4)) == 0.0
    ser_ml = np.mean(~np.isclose(ref, x.numpy(), atol=1e-4))
    assert ser_ml > 0.01                                   # the case is not trivially noiseless

    x_kb = KBestDetector(k=16 ** k)(y, h, nv)
    assert torch.equal(x_kb, x_ml)
    # default K-Best (k=16) is never better than ML on average, and close to it at K=2
    x_k16 = KBestDetector()(y, h, nv)
    ser_k16 = np.mean(~np.isclose(x_k16.numpy(), x.numpy(), atol=1e-4))
    assert ser_ml <= ser_k16 + 0.01


def test_ml_kbest_beat_linear_on_small_array():
    # M = K: ML's advantage over LMMSE is large and must show up clearly
    b, k, t = 400, 2, 4
    h, idx, x, y, nv = _draw(4000, b, 2, k, t, 16.0)
    ser = {}
    for name, det in [("ml", MLDetector()), ("lmmse", LMMSEDetector())]:
        xh = det(y, h, nv)
        ser[name] = (~torch.isclose(hard_decision(xh, 4)[1], x, atol=1e-4)).double().mean().item()
    assert ser["ml"] < 0.7 * ser["lmmse"], ser


def test_hard_decision_symbols_to_bits_round_trip_with_sionna_mapper():
    from sionna.phy.mapping import Mapper

    g = torch.Generator().manual_seed(5)
    for bits_per_symbol in (2, 4, 6, 8):
        bits = torch.randint(0, 2, (50, 12 * bits_per_symbol), generator=g)
        pts = Mapper("qam", bits_per_symbol)(bits.float())                 # [50, 12]
        noise = torch.complex(torch.randn(pts.shape, generator=g), torch.randn(pts.shape, generator=g))
        # perturbation smaller than half the minimum distance keeps the decision
        dmin = 2 / math.sqrt(2 * (2 ** bits_per_symbol - 1) / 3)
        noisy = pts + 0.2 * dmin * noise / noise.abs().clamp_min(1)
        idx, dec = hard_decision(noisy, bits_per_symbol)
        assert idx.dtype == torch.int64 and dec.dtype == torch.complex64
        assert torch.equal(dec, pts)
        back = symbols_to_bits(idx, bits_per_symbol).reshape(50, -1)
        assert torch.equal(back, bits)


def test_hard_decision_is_nearest_point():
    from sionna.phy.mapping import Constellation

    g = torch.Generator().manual_seed(6)
    for bits_per_symbol in (2, 4, 6):
        c = Constellation("qam", bits_per_symbol)()
        z = 1.5 * torch.complex(torch.randn(5000, generator=g), torch.randn(5000, generator=g))
        idx, dec = hard_decision(z, bits_per_symbol)
        ref = (z[:, None] - c[None, :]).abs().argmin(-1)
        assert torch.equal(idx, ref)
        assert torch.equal(dec, c[ref])


def test_random_symbols_uniform_unit_energy_and_seeded():
    idx, pts = random_symbols((200, 100), 4, torch.Generator().manual_seed(1))
    idx2, _ = random_symbols((200, 100), 4, torch.Generator().manual_seed(1))
    assert torch.equal(idx, idx2)
    counts = torch.bincount(idx.reshape(-1), minlength=16).double()
    n = idx.numel()
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4
    assert abs(pts.abs().square().mean().item() - 1.0) < 4 * math.sqrt(0.32 / n)  # var of |x|^2 = 0.32


def test_ml_refuses_too_many_hypotheses():
    y = torch.zeros(1, 16, 1, dtype=torch.complex64)
    h = torch.zeros(1, 16, 8, dtype=torch.complex64)
    with pytest.raises(LinksimError, match=r"ml: 16-QAM with K=8 users is 4\.3e9 hypotheses.*kbest"):
        MLDetector(num_bits_per_symbol=4)(y, h, 0.1)


def test_noise_var_per_sample_tensor():
    h, idx, x, y, _ = _draw(9, 8, 8, 3, 2, 10.0)
    nv = torch.linspace(0.05, 0.2, 8)
    a = LMMSEDetector()(y, h, nv)
    for i in range(8):
        bi = LMMSEDetector()(y[i:i + 1], h[i:i + 1], float(nv[i]))
        assert torch.allclose(a[i:i + 1], bi, atol=1e-5)


def test_double_precision_agrees_with_single():
    """Every detector of this package in precision="double": complex128 out, same answers."""
    h, idx, x, y, nv = _draw(11, 64, 16, 2, 6, 20.0)
    nvt = torch.linspace(0.005, 0.02, 64)
    names = [n for n in registry.names("detector")
             if registry.spec(n).factory.__module__.startswith("linksim.blocks.detectors")]
    assert {"lmmse", "zf_det", "mf", "kbest", "ml"} <= set(names)
    for name in names:
        single = registry.get(name, num_bits_per_symbol=4, precision="single")
        double = registry.get(name, num_bits_per_symbol=4, precision="double")
        assert double.cdtype == torch.complex128 and double.dtype == torch.float64
        for noise in (nv, nvt):
            xs, xd = single(y, h, noise), double(y, h, noise)
            assert xs.dtype == torch.complex64 and xd.dtype == torch.complex128, name
            assert xd.shape == xs.shape == x.shape
            if name in ("kbest", "ml"):      # hard decisions: the same ones, as double points
                dec = hard_decision(xs, 4)[0]
                assert torch.equal(xd, constellation_points(4, dtype=torch.complex128)[dec]), name
            else:
                err = (xd - xs.to(torch.complex128)).abs().max() / xd.abs().max()
                assert err < 1e-5, (name, err.item())
