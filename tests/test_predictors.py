"""Predictors against physics (Jakes/Clarke correlation), exact models and a numpy least squares."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

import linksim
from linksim import blocks as registry
from linksim.blocks.predictors import ARPredictor, OutdatedPredictor
from linksim.metrics import nmse_db
from linksim.errors import LinksimError
from linksim.scenario import from_dict

C_LIGHT = 299_792_458.0


def _noisy(h: torch.Tensor, snr_db: float, seed: int) -> torch.Tensor:
    """h + CN(0, 10^(-snr/10)) per entry (channels have unit average gain per entry)."""
    g = torch.Generator().manual_seed(seed)
    nv = 10 ** (-snr_db / 10)
    n = torch.complex(torch.randn(h.shape, generator=g), torch.randn(h.shape, generator=g))
    return h + n * math.sqrt(nv / 2)


def _exponentials(seed, b=8, k=3, m=4, f=6, n_t=20, comps=3, nu=(0.02, 0.08)):
    """Sum of `comps` complex exponentials per (sample, user): the same Doppler frequencies on
    every antenna/subcarrier, with independent complex gains. Returns [b, n_t, K, M, F]."""
    g = torch.Generator().manual_seed(seed)
    mag = nu[0] + (nu[1] - nu[0]) * torch.rand(b, k, comps, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(b, k, comps, generator=g) < 0.5, -1.0, 1.0).double()
    w = 2 * math.pi * mag * sign                                           # rad / sample
    gain = torch.complex(torch.randn(b, k, comps, m, f, generator=g, dtype=torch.float64),
                         torch.randn(b, k, comps, m, f, generator=g, dtype=torch.float64))
    t = torch.arange(n_t, dtype=torch.float64)
    ph = torch.polar(torch.ones((), dtype=torch.float64), w[:, None] * t[None, :, None, None])
    return (ph[..., None, None] * gain[:, None]).sum(3).to(torch.complex64)


def test_registered_names_kinds_and_genie():
    assert {"outdated", "ar"} <= set(registry.names("predictor"))
    assert registry.spec("genie").kind == "reference" and registry.spec("genie").serves == "predictor"
    for name in ("outdated", "ar"):
        assert registry.spec(name).kind == "predictor"
        assert registry.get(name, horizon=3).horizon == 3
    gen = registry.get("genie", kind="predictor", horizon=3)
    assert gen.kind == "reference" and gen.horizon == 3
    fut = torch.randn(1, 3, 2, 4, 8, dtype=torch.complex64)
    assert torch.equal(gen(torch.zeros(1, 16, 2, 4, 8, dtype=torch.complex64), fut), fut)
    with pytest.raises(LinksimError, match="genie.*3 future"):
        gen(torch.zeros(1, 16, 2, 4, 8, dtype=torch.complex64), fut[:, :2])
    assert OutdatedPredictor.kind == ARPredictor.kind == "predictor"
    with pytest.raises(LinksimError, match="genie.*reference for predictors.*needs a detector"):
        registry.get("genie", kind="detector")


def test_outdated_repeats_last_sample():
    h = torch.randn(3, 16, 2, 4, 5, dtype=torch.complex64)
    out = OutdatedPredictor(horizon=4)(h)
    assert out.shape == (3, 4, 2, 4, 5) and out.dtype == torch.complex64
    for j in range(4):
        assert torch.equal(out[:, j], h[:, -1])
    out2 = OutdatedPredictor(horizon=2)(torch.randn(5, 7))            # generic [b, L]
    assert out2.shape == (5, 2)


def test_ar_coefficients_match_numpy_least_squares():
    h = _noisy(_exponentials(11, b=2, k=2, n_t=16), 15.0, 1)
    ar = ARPredictor(horizon=4, order=5, ridge=1e-3)
    x = h.reshape(2, 16, 2, -1).transpose(1, 2).reshape(4, 16, -1)      # [b*K, L, M*F]
    a = ar.coefficients(x).numpy()
    for grp in range(4):
        s = x[grp].numpy().astype(np.complex128)                      # [L, N]
        p = 5
        rows = np.stack([s[p - i - 1:16 - i - 1] for i in range(p)], -1).reshape(-1, p)
        tgt = s[p:].reshape(-1)
        gram = rows.conj().T @ rows
        lam = 1e-3 * np.trace(gram).real / p
        ref = np.linalg.solve(gram + lam * np.eye(p), rows.conj().T @ tgt)
        assert np.abs(a[grp] - ref).max() < 1e-3 * np.abs(ref).max()


def test_ar_is_per_sample_and_per_user():
    h = _noisy(_exponentials(12, b=4, k=3, n_t=16), 20.0, 2)
    ar = ARPredictor(horizon=4)
    full = ar(h)
    for i in range(4):
        assert torch.allclose(full[i:i + 1], ar(h[i:i + 1]), atol=1e-4, rtol=1e-4)
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(ar(h[:, :, perm]), full[:, :, perm], atol=1e-4, rtol=1e-4)


def test_ar_predicts_sum_of_exponentials():
    h = _exponentials(13, n_t=20)                                      # noiseless
    hist, fut = h[:, :16], h[:, 16:]
    ar_db = nmse_db(ARPredictor(horizon=4)(hist), fut)
    out_db = nmse_db(OutdatedPredictor(horizon=4)(hist), fut)
    assert ar_db < -30, ar_db
    assert out_db > -10 and out_db > ar_db + 20, (ar_db, out_db)
    # also with an explicit low order (3 components need p >= 3) and on a single series [b, L]
    assert nmse_db(ARPredictor(horizon=4, order=3)(hist), fut) < -30
    one = h[:, :, 0, 0, 0]                                              # [b, 20], 3 exponentials
    assert nmse_db(ARPredictor(horizon=4)(one[:, :16]), one[:, 16:]) < -30


def test_ar_constant_channel_is_stable():
    h = torch.randn(4, 1, 2, 4, 8, dtype=torch.complex64).expand(4, 16, 2, 4, 8)
    out = ARPredictor(horizon=4)(h)
    assert torch.isfinite(torch.view_as_real(out)).all()
    assert nmse_db(out, h[:, :4]) < -40


def _rayleigh_source(seed=7):
    sc = from_dict({"channel": {"model": "rayleigh", "bs_rows": 2, "bs_cols": 2, "num_subcarriers": 16},
                    "prediction": {"num_users": 4, "history": 16, "horizon": 4},
                    "run": {"seed": seed}})
    return sc, linksim.ChannelSource(sc)


def _ratio_and_se(num: torch.Tensor, den: torch.Tensor):
    """sum(num)/sum(den) and its delta-method standard error (entries i.i.d.)."""
    a, b = num.reshape(-1).double(), den.reshape(-1).double()
    n = a.numel()
    r = (a.mean() / b.mean()).item()
    cov = torch.cov(torch.stack([a, b]))
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]).item() / (n * b.mean().item() ** 2)
    return r, math.sqrt(var)


def test_outdated_on_clarke_rayleigh_matches_jakes():
    sc, src = _rayleigh_source()
    ch = sc.channel
    res = {}
    for v in (10.0, 60.0):
        h = src.sample(64, speed_kmh=v)                                # [64, 20, 4, 4, 16]
        assert h.shape == (64, 20, 4, 4, 16) and h.dtype == torch.complex64
        hist, fut = h[:, :16], h[:, 16:]
        pred = OutdatedPredictor(horizon=4)(hist)
        fd = v / 3.6 * ch.carrier_hz / C_LIGHT
        for j in range(4):                                             # j+1 steps ahead
            r, se = _ratio_and_se((pred[:, j] - fut[:, j]).abs().square(), fut[:, j].abs().square())
            ref = 2 * (1 - special.j0(2 * math.pi * fd * (j + 1) * ch.sample_spacing_s))
            assert abs(r - ref) < 4 * se, (v, j, r, ref, se)
        res[v] = nmse_db(pred, fut)
    assert res[60.0] > res[10.0] + 10, res                             # ageing grows with speed


@pytest.fixture(scope="module")
def uma_batches():
    sc = from_dict({"channel": {"model": "uma"}, "run": {"seed": 3}})
    assert sc.channel.num_bs_antennas == 16
    src = linksim.ChannelSource(sc)
    return {v: src.sample(16, speed_kmh=v, num_time=20) for v in (10.0, 30.0)}


@pytest.mark.parametrize("speed", [10.0, 30.0])
def test_ar_beats_outdated_on_uma_low_speed(uma_batches, speed):
    h = uma_batches[speed]
    assert h.shape == (16, 20, 4, 16, 48)
    hist, fut = _noisy(h[:, :16], 20.0, seed=int(speed)), h[:, 16:]
    ar_db = nmse_db(ARPredictor(horizon=4)(hist), fut)
    out_db = nmse_db(OutdatedPredictor(horizon=4)(hist), fut)
    print(f"UMa {speed} km/h, 20 dB: ar {ar_db:.2f} dB, outdated {out_db:.2f} dB")
    assert ar_db < out_db - 3, (ar_db, out_db)


def test_double_precision_agrees_with_single():
    """Every predictor (and the genie) of this module in precision="double": complex128 out,
    the same prediction as single precision up to float32 rounding."""
    h = _noisy(_exponentials(14, b=4, k=2, n_t=20), 20.0, 3)
    hist, fut = h[:, :16], h[:, 16:]
    names = [n for n in registry.names("predictor") + ["genie"]
             if registry.spec(n).factory.__module__ in ("linksim.blocks.predictors.classical",
                                                        "linksim.blocks.predictors.pad")]
    assert {"outdated", "ar", "genie", "pad"} <= set(names)
    for name in names:
        single = registry.get(name, kind="predictor", horizon=4, precision="single")
        double = registry.get(name, kind="predictor", horizon=4, precision="double")
        args = (hist, fut) if name == "genie" else (hist,)
        ps, pd = single(*args), double(*args)
        assert ps.dtype == torch.complex64 and pd.dtype == torch.complex128, name
        assert ps.shape == pd.shape == fut.shape
        err = (pd - ps.to(torch.complex128)).abs().max() / pd.abs().max()
        assert err < 1e-5, (name, err.item())
    real = ARPredictor(horizon=2, precision="double")(torch.randn(5, 12))
    assert real.dtype == torch.float64 and real.shape == (5, 2)
