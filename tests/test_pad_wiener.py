"""``pad`` and ``wiener`` against independent references: exact angle-delay path channels, numpy
least squares and polynomial roots, and the closed-form Wiener filter of Clarke's (Jakes) process."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

import linksim
from linksim import blocks as registry
from linksim.blocks.predictors import PADPredictor, WienerPredictor
from linksim.blocks.predictors.pad import poles_inside, extrapolate, lp_coefficients, stabilise
from linksim.blocks.predictors.wiener import temporal_covariance, wiener_taps
from linksim.errors import LinksimError
from linksim.metrics import nmse_db

from conftest import tiny

C_LIGHT = 299_792_458.0


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Every test writes the wiener cache into its own folder."""
    monkeypatch.setenv("LINKSIM_CACHE", str(tmp_path / "cache"))


def _paths(rows, cols, n_f, n_t, paths, b=2, seed=0):
    """``(h, parts)``: ``h`` [b, n_t, 1, rows*cols, n_f] complex128 the sum of the ``parts``, one
    per path, each on one angle-delay grid bin (kr, kc, tau) with its own Doppler nu
    (cycles/sample) and a random complex gain; antenna m = col * rows + row (Sionna's planar
    order). Built from explicit exponentials in numpy."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_t)[:, None, None, None]
    row = np.arange(rows)[None, None, :, None]
    col = np.arange(cols)[None, :, None, None]
    f = np.arange(n_f)[None, None, None, :]
    parts = np.zeros((len(paths), b, n_t, cols, rows, n_f), complex)
    for i in range(b):
        for q, (kr, kc, tau, nu) in enumerate(paths):
            g = rng.normal() + 1j * rng.normal()
            phase = nu * t + kr * row / rows + kc * col / cols - tau * f / n_f
            parts[q, i] = g * np.exp(2j * np.pi * phase)
    parts = torch.from_numpy(parts.reshape(len(paths), b, n_t, 1, rows * cols, n_f))
    return parts.sum(0), parts


PATHS = [(0, 1, 2, 0.031), (1, 3, 5, -0.057), (1, 0, 0, 0.012), (0, 2, 9, 0.083)]


def test_registered_and_bad_options_are_one_line_errors():
    assert {"outdated", "ar", "pad", "wiener"} <= set(registry.names("predictor"))
    assert registry.spec("pad").kind == registry.spec("wiener").kind == "predictor"
    assert "scenario" in registry.spec("wiener").options and "scenario" in registry.spec("pad").options
    bad = [lambda: registry.get("wiener", kind="predictor"),
           lambda: WienerPredictor(),
           lambda: WienerPredictor(scenario=tiny(), pool_drops=0),
           lambda: WienerPredictor(scenario=tiny(), speed_kmh=(100.0, 10.0)),
           lambda: PADPredictor(order=0), lambda: PADPredictor(order=2.5),
           lambda: PADPredictor(threshold=-1.0), lambda: PADPredictor(energy=0.0),
           lambda: PADPredictor(energy=1.5), lambda: PADPredictor(max_bins=0),
           lambda: PADPredictor(ridge=-1.0), lambda: PADPredictor(horizon=0)]
    for make in bad:
        with pytest.raises(LinksimError) as e:
            make()
        assert "\n" not in str(e.value) and str(e.value).startswith(("wiener", "pad")), str(e.value)
    with pytest.raises(LinksimError, match="wiener.*scenario"):
        registry.get("wiener", kind="predictor")


def test_lp_coefficients_and_stabilise_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 16)) + 1j * rng.normal(size=(5, 16))
    p, ridge = 6, 1e-3
    a = lp_coefficients(torch.from_numpy(x), p, ridge).numpy()
    af = lp_coefficients(torch.from_numpy(x), p, ridge, forward_backward=False).numpy()
    for s, got, got_f in zip(x, a, af):
        fwd = np.array([s[t - 1::-1][:p] for t in range(p, 16)])           # rows (s[t-1] .. s[t-p])
        bwd = np.array([s[t + 1:t + 1 + p] for t in range(16 - p)]).conj()
        for rows, tgt, res in ((np.vstack([fwd, bwd]), np.concatenate([s[p:], s[:16 - p].conj()]), got),
                               (fwd, s[p:], got_f)):
            gram = rows.conj().T @ rows
            load = ridge * np.trace(gram).real / p
            ref = np.linalg.solve(gram + load * np.eye(p), rows.conj().T @ tgt)
            assert np.abs(res - ref).max() < 1e-9 * np.abs(ref).max()
    # poles outside the unit circle are moved onto it, the others kept (numpy roots / poly)
    stab = stabilise(torch.from_numpy(a)).numpy()
    for before, after in zip(a, stab):
        z = np.roots(np.concatenate([[1.0], -before]))
        assert (np.abs(z) > 1).any() or np.allclose(before, after)
        z = z / np.maximum(np.abs(z), 1.0)
        assert np.abs(after - (-np.poly(z)[1:])).max() < 1e-9
        assert np.abs(np.roots(np.concatenate([[1.0], -after]))).max() <= 1 + 1e-9
    # the Schur-Cohn test (no eigenvalues) agrees with numpy's roots on a mix of stable and
    # unstable sets, and a batch that mixes both is stabilised row by row as above
    c = (rng.normal(size=(400, 6)) + 1j * rng.normal(size=(400, 6))) * rng.uniform(0.05, 0.5, (400, 1))
    inside = poles_inside(torch.from_numpy(c)).numpy()
    ref = np.array([np.abs(np.roots(np.concatenate([[1.0], -r]))).max() < 1 for r in c])
    assert 0.1 < ref.mean() < 0.9 and (inside == ref).all()
    mixed = stabilise(torch.from_numpy(c)).numpy()
    for before, after, ok in zip(c, mixed, ref):
        z = np.roots(np.concatenate([[1.0], -before]))
        assert np.abs(after - (-np.poly(z / np.maximum(np.abs(z), 1.0))[1:])).max() < 1e-9
        assert not ok or (after == before).all()
    # the recursion against a direct loop
    y = extrapolate(torch.from_numpy(x), torch.from_numpy(a), 3).numpy()
    for s, c, got in zip(x, a, y):
        buf = list(s)
        for _ in range(3):
            buf.append(sum(c[i] * buf[-1 - i] for i in range(p)))
        assert np.abs(got - np.array(buf[16:])).max() < 1e-9


@pytest.mark.parametrize("precision", ["single", "double"])
def test_pad_predicts_on_grid_paths_exactly(precision):
    sc = tiny(channel={"bs_rows": 2, "bs_cols": 4, "num_subcarriers": 16})
    h, parts = _paths(2, 4, 16, 20, PATHS)
    pad = registry.get("pad", kind="predictor", scenario=sc.replace(run={"precision": precision}))
    assert pad.array == (2, 4)
    # the planar 2-D DFT puts each path in exactly one bin (a 1-D DFT over m would not)
    g = pad.to_angle_delay(h)
    energy = g.abs().square().sum(1).reshape(2, -1)
    assert ((energy > 1e-12 * energy.max()).sum(-1) == len(PATHS)).all()
    flat = PADPredictor().to_angle_delay(h).abs().square().sum(1).reshape(2, -1)
    assert ((flat > 1e-12 * energy.max()).sum(-1) > len(PATHS)).all()
    pred = pad(h[:, :16])
    assert pred.shape == (2, 4, 1, 8, 16)
    assert pred.dtype == (torch.complex128 if precision == "double" else torch.complex64)
    fut = h[:, 16:]
    err = ((pred.to(torch.complex128) - fut).abs().square().sum() / fut.abs().square().sum()).sqrt()
    assert err < (1e-5 if precision == "double" else 1e-4), err.item()   # ridge 1e-6: ~1e-7 bias
    # one bin kept: exactly the strongest path's own (exact) future, the others zero
    one = PADPredictor(max_bins=1, scenario=sc, precision="double")(h[:, :16])
    strongest = parts.abs().square().sum((2, 3, 4, 5)).argmax(0)                      # [b]
    for i in range(2):
        ref = parts[strongest[i], i, 16:]
        assert (one[i] - ref).abs().max() < 1e-5 * ref.abs().max()


def test_pad_keeps_noise_out_and_beats_outdated_on_paths():
    sc = tiny(channel={"bs_rows": 2, "bs_cols": 4, "num_subcarriers": 16})
    h = _paths(2, 4, 16, 20, PATHS, b=8, seed=3)[0].to(torch.complex64)
    g = torch.Generator().manual_seed(4)
    nv = 10 ** (-2.0) * h.abs().square().mean().item()                   # 20 dB history SNR
    shape = h[:, :16].shape
    noise = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    hist = h[:, :16] + noise * math.sqrt(nv / 2)
    pad = PADPredictor(scenario=sc)
    s = pad.to_angle_delay(hist.to(torch.complex128)).permute(0, 2, 3, 4, 1).reshape(8, -1, 16)
    assert (pad.select(s.abs().square().sum(-1)).sum(-1) < 40).all()     # 4 paths of 128 bins + a few
    pad_db = nmse_db(pad(hist), h[:, 16:])
    out_db = nmse_db(registry.get("outdated", horizon=4)(hist), h[:, 16:])
    keep_all = nmse_db(PADPredictor(threshold=0.0, scenario=sc)(hist), h[:, 16:])
    assert pad_db < out_db - 15 and pad_db < keep_all - 3, (pad_db, out_db, keep_all)
    assert pad_db < -25, pad_db


def test_pad_other_layouts():
    t = torch.arange(20.0, dtype=torch.float64)
    x = (torch.exp(2j * math.pi * 0.07 * t) + 0.5 * torch.exp(-2j * math.pi * 0.02 * t))[None, :, None]
    h = x * torch.tensor([1.0, 2.0j, -0.5], dtype=torch.complex128)                 # [1, 20, 3]
    out = PADPredictor(threshold=0.0, precision="double")(h[:, :16])       # [b, L, N]: no transform
    assert out.shape == (1, 4, 3) and (out - h[:, 16:]).abs().max() < 1e-5
    only = PADPredictor(precision="double")(h[:, :16])     # median energy 1: keeps the 2j entry only
    assert (only[..., 1] - h[:, 16:, 1]).abs().max() < 1e-5 and only[..., 0::2].abs().max() == 0
    cos = torch.cos(0.3 * t)[None, :, None].repeat(2, 1, 5)                         # real [2, 20, 5]
    real = PADPredictor(horizon=2, threshold=0.0, precision="double")(cos[:, :16])
    assert real.dtype == torch.float64 and (real - cos[:, 16:18]).abs().max() < 1e-5


def _jakes(n_t, fd_dt):
    tau = np.arange(n_t)[:, None] - np.arange(n_t)[None, :]
    return special.j0(2 * np.pi * fd_dt * tau).astype(complex)


def test_wiener_taps_closed_form_and_ar1():
    rng = np.random.default_rng(2)
    a = 0.95 * np.exp(0.3j)                            # complex AR(1): R[i, j] = a^(i-j), i >= j
    i, j = np.meshgrid(np.arange(20), np.arange(20), indexing="ij")
    R = np.where(i >= j, a ** np.abs(i - j), np.conj(a) ** np.abs(i - j))
    for nv in (0.0, 0.05):
        W = wiener_taps(torch.from_numpy(R), 16, nv).numpy()
        ref = R[16:, :16] @ np.linalg.inv(R[:16, :16] + nv * np.eye(16))
        assert np.abs(W - ref).max() < 1e-9
    W0 = wiener_taps(torch.from_numpy(R), 16, 0.0).numpy()         # noiseless AR(1): a^j on the last
    assert np.abs(W0[:, -1] - a ** np.arange(1, 5)).max() < 1e-9 and np.abs(W0[:, :-1]).max() < 1e-9
    # the empirical covariance of many AR(1) series converges to R (and it is Hermitian)
    n = 4000
    x = np.zeros((n, 20), complex)
    x[:, 0] = (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
    for t in range(1, 20):
        w = (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)
        x[:, t] = a * x[:, t - 1] + np.sqrt(1 - abs(a) ** 2) * w
    h = torch.from_numpy(x.reshape(40, 100, 20).transpose(0, 2, 1)[:, :, None, :])   # [40, 20, 1, 100]
    Re = temporal_covariance(h).numpy()
    assert np.allclose(Re, Re.conj().T) and np.abs(Re - R).max() < 0.08
    # every (drop, user) series is scaled to unit RMS first: per-user gains do not matter
    gains = rng.uniform(0.1, 10.0, size=(40, 1, 1, 1)) * np.exp(1j * rng.uniform(0, 6, (40, 1, 1, 1)))
    gains = torch.from_numpy(gains)
    assert np.abs(temporal_covariance(h * gains).numpy() - Re).max() < 1e-12


def test_wiener_on_clarke_matches_jakes_closed_form():
    """Clarke/Rayleigh pool at one speed: the taps are those of the J0 covariance (numpy)."""
    v = 60.0
    sc = tiny(channel={"model": "rayleigh", "num_subcarriers": 24}, prediction={"snr_db": 10.0})
    w = registry.get("wiener", kind="predictor", scenario=sc, speed_kmh=v, pool_drops=64)
    fd_dt = v / 3.6 * sc.channel.carrier_hz / C_LIGHT * sc.channel.sample_spacing_s
    R = _jakes(20, fd_dt)
    nv = 0.1
    Wopt = R[16:, :16] @ np.linalg.inv(R[:16, :16] + nv * np.eye(16))
    W = w.taps.numpy().astype(complex)
    assert np.abs(w.covariance.numpy() - R).max() < 0.03

    def mse(F):          # per-step MSE of F under the true covariance
        A = R[:16, :16] + nv * np.eye(16)
        err = R[16:, 16:] - F @ R[:16, 16:] - R[16:, :16] @ F.conj().T + F @ A @ F.conj().T
        return np.real(np.diag(err))

    assert (mse(W) <= mse(Wopt) * 1.01 + 1e-6).all(), (mse(W), mse(Wopt))
    assert np.linalg.norm(W - Wopt) < 0.05 * np.linalg.norm(Wopt)
    # the same taps for every sample and entry: the output is W @ history, checked per sample
    h = torch.randn(3, 16, 2, 8, 24, dtype=torch.complex64)
    out = w(h)
    ref = np.einsum("pl,bl...->bp...", W, h.numpy().astype(complex))
    assert np.abs(out.numpy() - ref).max() < 1e-4 * np.abs(ref).max()
    for i in range(3):
        assert torch.equal(w(h[i:i + 1]), out[i:i + 1])
    with pytest.raises(LinksimError, match="wiener: taps fitted for L=16"):
        w(h[:, :12])


def test_wiener_cache_reused_across_precision_snr_and_written_atomically(monkeypatch, tmp_path):
    sc = tiny(channel={"model": "rayleigh", "num_subcarriers": 12})
    first = registry.get("wiener", kind="predictor", scenario=sc, pool_drops=8)
    files = list((tmp_path / "cache" / "wiener").iterdir())
    assert [f.suffix for f in files] == [".safetensors"] and first.cache_path == files[0]

    def no_fit(*a, **k):
        raise AssertionError("fitted again instead of reading the cache")

    monkeypatch.setattr(WienerPredictor, "_fit", no_fit)
    double = sc.replace(run={"precision": "double"})
    dbl = registry.get("wiener", kind="predictor", scenario=double, pool_drops=8)
    assert torch.equal(dbl.covariance, first.covariance) and dbl.taps.dtype == torch.complex128
    assert torch.allclose(dbl.taps.to(torch.complex64), first.taps)
    low = registry.get("wiener", kind="predictor", scenario=sc, pool_drops=8, snr_db=0.0)
    assert low.taps.abs().sum() < first.taps.abs().sum()               # more noise: smaller taps
    assert low.taps.shape == (4, 16)
    with pytest.raises(AssertionError, match="fitted again"):             # other pool options: refit
        registry.get("wiener", kind="predictor", scenario=sc, pool_drops=9)
    monkeypatch.undo()
    monkeypatch.setenv("LINKSIM_CACHE", str(tmp_path / "cache"))
    first.cache_path.write_bytes(b"damaged")                            # a damaged file is refitted
    again = registry.get("wiener", kind="predictor", scenario=sc, pool_drops=8)
    assert torch.equal(again.covariance, first.covariance)
    assert sorted(f.name for f in (tmp_path / "cache" / "wiener").iterdir()) == [files[0].name]


def test_sweep_with_pad_and_wiener(tmp_path):
    from linksim.results import read_rows
    from linksim.sweep import sweep

    sc = tiny(channel={"model": "rayleigh", "num_subcarriers": 12}, prediction={"num_samples": 8})
    store = sweep(sc, "prediction", ["outdated", "ar", "pad", "wiener"], "speed_kmh=10,100",
                  tmp_path / "out", progress=False)
    rows = read_rows(store.csv)
    assert sorted({r["block"] for r in rows}) == ["ar", "outdated", "pad", "wiener"] and len(rows) == 16
    assert {r["metric"] for r in rows} == {"nmse_db", "nmse_noisy_db"}
    assert all(math.isfinite(float(r["value"])) for r in rows)
