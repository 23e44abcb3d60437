"""Learned precoder (CNN -> optimal structure) and learned per-antenna predictors (RNN/LSTM/GRU/
Transformer): protocols, the connection to the classical blocks they build on, and tiny training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from linksim.agents.base import Dims, build_model
from linksim.registry import ARCHS
from linksim.blocks import get
from linksim.blocks.precoders import structured_beamformer, sum_rate, wmmse_p_lambda
from linksim.errors import LinksimError

PRED_ARCHS = ("rnn", "lstm", "gru", "transformer")
DIMS = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=48, history=16, horizon=4,
            bits_per_symbol=4, symbols_per_sample=6)
TINY = Dims(num_bs_antennas=16, num_users=4, num_subcarriers=8, history=8, horizon=2,
            bits_per_symbol=4, symbols_per_sample=6)
# small widths keep the CPU training test fast; the depth is the default (4 recurrent layers)
TINY_HP = {"rnn": {"hidden": 64}, "lstm": {"hidden": 64}, "gru": {"hidden": 64},
           "transformer": {"d_model": 32, "dim_feedforward": 64, "num_layers": 2}}




def _rayleigh(n, k=4, m=16, seed=0, gain_spread_db=0.0):
    g = torch.Generator().manual_seed(seed)
    h = torch.complex(torch.randn(n, k, m, generator=g), torch.randn(n, k, m, generator=g))
    gain = 10 ** (-gain_spread_db / 10 * torch.rand(n, k, 1, generator=g))
    return (h * torch.sqrt(gain / 2)).to(torch.complex64)


def _doppler_series(n, n_hist, horizon, f, seed, comps=3, snr_db=20.0):
    """Sums of `comps` complex exponentials: Doppler nu in +-[0.02, 0.08] cycles/sample, delay
    phase ramps across the F subcarriers; unit average power; CN noise on the history only."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    sign = torch.where(torch.rand(n, comps, generator=g) < 0.5, -1.0, 1.0).to(f64)
    nu = (0.02 + 0.06 * torch.rand(n, comps, generator=g, dtype=f64)) * sign
    tau = 0.15 * torch.rand(n, comps, generator=g, dtype=f64)
    a = torch.complex(torch.randn(n, comps, generator=g, dtype=f64),
                      torch.randn(n, comps, generator=g, dtype=f64)) / math.sqrt(2 * comps)
    t = torch.arange(n_hist + horizon, dtype=f64)
    fr = torch.arange(f, dtype=f64)
    ph = 2 * math.pi * (nu[:, :, None, None] * t[:, None] - tau[:, :, None, None] * fr)
    h = (a[:, :, None, None] * torch.polar(torch.ones_like(ph), ph)).sum(1)      # [n, L+P, F]
    nz = torch.complex(torch.randn(n, n_hist, f, generator=g, dtype=f64),
                       torch.randn(n, n_hist, f, generator=g, dtype=f64))
    hist = h[:, :n_hist] + nz * math.sqrt(10 ** (-snr_db / 10) / 2)
    return hist.to(torch.complex64), h[:, n_hist:].to(torch.complex64)


def _precoding_batch(n, seed, stage="labels", noise=(0.05, 0.2), gain_spread_db=0.0):
    h = _rayleigh(n, seed=seed, gain_spread_db=gain_spread_db)
    g = torch.Generator().manual_seed(seed + 1)
    ptx = 0.5 + 1.5 * torch.rand(n, generator=g)
    nv = noise[0] + (noise[1] - noise[0]) * torch.rand(n, generator=g)
    w = get("wmmse")(h, ptx, nv)
    p, lam = wmmse_p_lambda(h, w, nv, ptx)
    return {"h": h, "p_tx": ptx, "noise_var": nv, "p_ref": p.float(), "lam_ref": lam.float(),
            "stage": stage}, w


def _train(model, batch, steps, lr):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ------------------------------------------------------------------------------------ registry

def test_registered_archs_and_bad_options():
    import linksim.agents.models  # noqa: F401

    assert ARCHS["cnn"].tasks == ("precoding",)
    for arch in PRED_ARCHS:
        assert ARCHS[arch].tasks == ("prediction",)
    with pytest.raises(LinksimError, match="bad \\[model\\] options"):
        build_model("lstm", DIMS, {"hiden": 3})
    with pytest.raises(LinksimError, match="features"):
        build_model("cnn", DIMS, {"features": "abs"})
    with pytest.raises(LinksimError, match="multiple of nhead"):
        build_model("transformer", DIMS, {"d_model": 30, "nhead": 4})


# ------------------------------------------------------------------------------------ protocols

def test_cnn_protocol_shapes_and_power_budget():
    torch.manual_seed(0)
    for features in ("h", "gram"):
        m = build_model("cnn", DIMS, {"features": features})
        # make the outputs non-uniform so the budget is checked away from the init point
        torch.nn.init.normal_(m.out.weight, std=0.5)
        h = _rayleigh(32, seed=1, gain_spread_db=20.0)
        ptx = torch.logspace(-1, 1, 32)
        nv = torch.full((32,), 0.1)
        w = m(h, ptx, nv)
        assert w.shape == (32, 16, 4) and w.dtype == torch.complex64
        pw = (w.abs() ** 2).sum((1, 2))
        assert torch.all(pw <= ptx * (1 + 1e-5))
        assert torch.allclose(pw, ptx, rtol=1e-5)
        p, lam = m.predict_p_lambda(h, ptx, nv)
        assert torch.all(p > 0) and torch.all(lam > 0)
        assert torch.allclose(lam.sum(-1), ptx, rtol=1e-5)
        # scalar p_tx / noise_var are accepted
        assert m(h, 1.0, 0.1).shape == (32, 16, 4)
    with pytest.raises(LinksimError, match="K=4"):
        m(_rayleigh(2, k=3), 1.0, 0.1)


@pytest.mark.parametrize("features", ["h", "gram"])
def test_cnn_zero_padded_users_is_the_kmax_net_on_padded_input(features):
    """users = [2, 4]: K = 2 channels run the K_max = 4 network on the channel (features of the
    real rows, then zero rows), and p, lambda are the softmaxes of the K real users' logits only,
    re-derived here from the layers by hand; K outside the range is refused, also by check_dims."""
    torch.manual_seed(0)
    m = build_model("cnn", DIMS, {"features": features, "users": [2, 4]})
    torch.nn.init.normal_(m.out.weight, std=0.5)
    h = _rayleigh(6, k=2, seed=3, gain_spread_db=10.0)
    p, lam = m.predict_p_lambda(h, 2.0, 0.1)
    ms = (h.abs() ** 2).mean((1, 2))
    hn = h / ms.sqrt()[:, None, None]
    if features == "h":
        img = torch.zeros(6, 3, 4, 16)
        img[:, :, :2] = torch.stack([hn.real, hn.imag, hn.abs()], 1)
    else:
        g = hn @ hn.mH / 16
        img = torch.zeros(6, 2, 4, 4)
        img[:, :, :2, :2] = torch.stack([g.real, g.imag], 1)
    snr = ((10 * torch.log10(2.0 * ms / 0.1) - 10.0) / 10.0)[:, None]
    z = m.out(m.mlp(torch.cat([m.conv(img).flatten(1), snr], 1)))
    assert torch.allclose(p, 2.0 * torch.softmax(z[:, :2], -1), atol=1e-5)
    assert torch.allclose(lam, 2.0 * torch.softmax(z[:, 4:6], -1), atol=1e-5)
    w = m(h, 2.0, 0.1)
    assert w.shape == (6, 16, 2) and torch.allclose((w.abs() ** 2).sum((1, 2)), torch.full((6,), 2.0))
    assert m(_rayleigh(3, k=4), 1.0, 0.1).shape == (3, 16, 4) and m.users_range == (2, 4)
    with pytest.raises(LinksimError, match="K in 2..4"):
        m(_rayleigh(2, k=5), 1.0, 0.1)
    five = Dims(**{**DIMS.as_dict(), "num_users": 5})
    assert m.check_dims("precoding", DIMS) == [] and m.check_dims("precoding", five)
    with pytest.raises(LinksimError, match="model.users"):
        build_model("cnn", DIMS, {"users": [3]})


def test_cnn_features_are_scale_invariant():
    """(p/p_tx, lam/p_tx) depend on h only through h/rms(h) and p_tx*ms(h)/noise_var."""
    torch.manual_seed(0)
    m = build_model("cnn", DIMS, {})
    torch.nn.init.normal_(m.out.weight, std=0.5)
    h = _rayleigh(8, seed=2)
    p1, l1 = m.predict_p_lambda(h, 1.0, 0.1)
    p2, l2 = m.predict_p_lambda(3.0 * h, 2.0, 0.1 * 9.0 * 2.0)
    assert torch.allclose(p2 / 2.0, p1, atol=1e-5) and torch.allclose(l2 / 2.0, l1, atol=1e-5)


def test_predictor_protocol_shapes_and_series_layout():
    torch.manual_seed(0)
    h = torch.randn(2, 16, 3, 5, 48, dtype=torch.complex64)       # [b, L, K, M, F]
    for arch in PRED_ARCHS:
        m = build_model(arch, DIMS, {})
        torch.nn.init.normal_(m.head.weight, std=0.05)
        with torch.no_grad():
            y = m(h)
            assert y.shape == (2, 4, 3, 5, 48) and y.dtype == torch.complex64
            # forward = predict_series on each (user, antenna) series
            s = m.predict_series(h[1, :, 2, 4][None])
            assert torch.allclose(y[1, :, 2, 4], s[0], atol=1e-6)
            assert m.predict_series(h[:, :, 0, 0]).shape == (2, 4, 48)
    with pytest.raises(LinksimError, match="F=48"):
        m.predict_series(torch.zeros(2, 16, 47, dtype=torch.complex64))
    with pytest.raises(LinksimError, match="L=16"):
        m.predict_series(torch.zeros(2, 15, 48, dtype=torch.complex64))


def test_user_series_predictors_see_every_antenna_of_a_user():
    """series = "user": one series per user with its M x F entries per step (what ar fits jointly).
    Untrained it is exactly outdated CSI; a user's prediction depends on its other antennas; it
    trains on [B, L, M, F] samples and refuses a scenario with another M."""
    torch.manual_seed(0)
    dims = Dims(num_bs_antennas=4, num_users=2, num_subcarriers=6, history=8, horizon=2,
                bits_per_symbol=4, symbols_per_sample=6)
    h = torch.randn(3, 8, 2, 4, 6, dtype=torch.complex64)
    for arch in PRED_ARCHS:
        m = build_model(arch, dims, {"series": "user", "hidden": 32} if arch != "transformer"
                        else {"series": "user", "d_model": 32})
        assert m.layouts == {"prediction": "user"}
        with torch.no_grad():
            assert torch.equal(m(h), h[:, -1:].expand(3, 2, 2, 4, 6))
            torch.nn.init.normal_(m.head.weight, std=0.05)
            y = m(h)
            h2 = h.clone()
            h2[0, :, 1, 3] += 1.0                                 # another antenna of user 1
            y2 = m(h2)
            assert not torch.equal(y[0, :, 1, 0], y2[0, :, 1, 0])  # antenna 0 sees antenna 3
            assert torch.equal(y[0, :, 0], y2[0, :, 0])            # user 0 does not
        fut = h[:, :2, 0] * 1.01
        batch = {"hist": h[:, :, 0], "future": fut}               # [B, L, M, F], [B, P, M, F]
        losses = _train(m, batch, 30, 3e-3)
        assert losses[-1] < losses[0]
        other = Dims(**{**dims.as_dict(), "num_bs_antennas": 8})
        assert any("num_bs_antennas=4" in d for d in m.check_dims("prediction", other))


# ------------------------------------------------------------------------------------ anchors

def test_structure_with_reference_parameters_reproduces_wmmse():
    """The CNN's path from (p, lam) to w is the optimal structure: with WMMSE's own (p, lam) in
    place of the network output it gives WMMSE's sum-rate (within 1 % per sample)."""
    batch, w_ref = _precoding_batch(64, seed=5)
    h, ptx, nv = batch["h"], batch["p_tx"], batch["noise_var"]
    m = build_model("cnn", DIMS, {})
    m.predict_p_lambda = lambda *_: (batch["p_ref"], batch["lam_ref"])   # bypass the network
    w = m(h, ptx, nv)
    r_ref = sum_rate(h, w_ref, nv)
    r = sum_rate(h, w, nv)
    assert torch.all((r - r_ref).abs() <= 0.01 * r_ref)
    w_direct = structured_beamformer(h, batch["p_ref"], batch["lam_ref"], nv, ptx)
    assert torch.equal(w, w_direct)
    # label loss of perfect predictions is zero
    assert m.training_loss(batch).item() < 1e-12


@pytest.mark.parametrize("arch", PRED_ARCHS)
def test_untrained_predictor_is_exactly_outdated(arch):
    torch.manual_seed(1)
    m = build_model(arch, DIMS, {})
    with torch.no_grad():                       # whatever the core computes, the head is zero
        for name, p in m.named_parameters():
            if not name.startswith("head."):
                p.add_(torch.randn_like(p))
    h = torch.randn(2, 16, 2, 3, 48, dtype=torch.complex64) * 7.0
    out = get("outdated", horizon=4)(h)
    with torch.no_grad():
        assert torch.equal(m(h), out)
        torch.nn.init.normal_(m.head.weight, std=0.1)
        assert not torch.allclose(m(h), out)
        torch.nn.init.zeros_(m.head.weight)
        assert torch.equal(m(h), out)


def test_predictor_loss_at_init_is_outdated_normalised_mse():
    """The documented loss, re-derived in numpy for the outdated prediction."""
    hist, fut = _doppler_series(32, 8, 2, 8, seed=3)
    m = build_model("gru", TINY, {"hidden": 16, "num_layers": 1})
    loss = m.training_loss({"hist": hist, "future": fut}).item()
    hn, fn = hist.numpy().astype(np.complex128), fut.numpy().astype(np.complex128)
    r2 = np.mean(np.abs(hn) ** 2, axis=(1, 2))
    ref = np.mean(np.abs(fn - hn[:, -1:]) ** 2 / r2[:, None, None])
    assert loss == pytest.approx(ref, rel=1e-4)
    # log_nmse: mean over samples of ln(per-sample NMSE) of the same outdated prediction
    m = build_model("gru", TINY, {"hidden": 16, "num_layers": 1, "loss": "log_nmse"})
    loss = m.training_loss({"hist": hist, "future": fut}).item()
    nmse = np.sum(np.abs(fn - hn[:, -1:]) ** 2, axis=(1, 2)) / np.sum(np.abs(fn) ** 2, axis=(1, 2))
    assert loss == pytest.approx(np.mean(np.log(nmse + 1e-6)), rel=1e-4, abs=1e-5)


# ------------------------------------------------------------------------------------ training

@pytest.mark.parametrize("arch", PRED_ARCHS)
def test_predictor_loss_falls(arch):
    torch.manual_seed(0)
    hist, fut = _doppler_series(128, TINY.history, TINY.horizon, TINY.num_subcarriers, seed=11)
    m = build_model(arch, TINY, TINY_HP[arch])
    losses = _train(m, {"hist": hist, "future": fut}, steps=60, lr=2e-3)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.7 * losses[0]


def test_cnn_label_loss_falls():
    torch.manual_seed(0)
    batch, _ = _precoding_batch(64, seed=7)
    m = build_model("cnn", TINY, {"channels": (16, 16), "hidden": 128})
    losses = _train(m, batch, steps=40, lr=1e-3)
    assert np.mean(losses[-5:]) < 0.7 * losses[0]


def test_cnn_rate_stage_raises_sum_rate():
    """Low SNR and unequal user gains: the init (equal power, RZF directions) is clearly
    suboptimal there, and training on -sum_rate must raise the (training) sum-rate."""
    torch.manual_seed(0)
    batch, w_ref = _precoding_batch(64, seed=9, stage="rate", noise=(1.0, 1.0),
                                    gain_spread_db=15.0)
    m = build_model("cnn", TINY, {"channels": (16, 16), "hidden": 128})
    losses = _train(m, batch, steps=40, lr=1e-3)
    r_wmmse = sum_rate(batch["h"], w_ref, batch["noise_var"]).mean().item()
    assert -losses[0] < r_wmmse
    assert -np.mean(losses[-5:]) > -losses[0] + 0.1 * (r_wmmse + losses[0])


def test_label_stage_labels_each_draw_once_and_equal_wmmse_of_the_batch(monkeypatch):
    """A single-K precoder's label batches carry WMMSE's (p, lambda) of their own h and power;
    the labels of one set of samples are computed once (the steps sharing a draw reuse them), and
    a new chain (a resumed run) labels the same samples the same way."""
    from conftest import tiny
    from linksim.agents.spec import TrainSpec
    from linksim.chains import chain_class
    from linksim.config import generator

    sc = tiny(channel={"model": "rayleigh"})
    chain = chain_class("precoding")(sc)
    samples = torch.randn(40, 2, 8, dtype=torch.complex64)
    calls = {"n": 0}
    real = type(chain._wmmse()).__call__

    def counting(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)
    monkeypatch.setattr(type(chain._wmmse()), "__call__", counting)
    a = chain.train_batch(samples, 16, generator(1), TrainSpec(), "labels")
    b = chain.train_batch(samples, 16, generator(2), TrainSpec(), "labels")
    assert calls["n"] == 1 and not torch.equal(a["h"], b["h"])
    w = get("wmmse")(a["h"], a["p_tx"], a["noise_var"])
    p, lam = wmmse_p_lambda(a["h"], w, a["noise_var"], a["p_tx"])
    torch.testing.assert_close(a["p_ref"], p.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(a["lam_ref"], lam.float(), rtol=1e-4, atol=1e-6)
    again = chain_class("precoding")(sc).train_batch(samples.clone(), 16, generator(1), TrainSpec(), "labels")
    assert all(torch.equal(a[k], again[k]) for k in ("h", "p_tx", "p_ref", "lam_ref"))
