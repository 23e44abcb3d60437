"""The 3GPP channel models besides UMa (UMi, RMa, CDL) against TR 38.901 and the source's contracts.

References are independent of the code under test: Jakes' J0 for the lag-1 time correlation, the
TR 38.901 median delay spreads for the ordering of frequency correlations, and for CDL-A the closed
form of the frequency correlation built from the TR 38.901 tables (cluster delays/powers, ray
offsets, BS element pattern).
"""
import math

import numpy as np
import pytest
import torch
from scipy.special import j0

import linksim
from linksim.channel.tr38901 import CDLLinks
from linksim.scenario import from_dict

MODELS = ("uma", "umi", "rma", "cdl")


def _sc(model, **channel):
    """A small scenario: 2x2 array, K = 3, 48 subcarriers."""
    ch = {"model": model, "bs_rows": 2, "bs_cols": 2, **channel}
    return from_dict({"name": "t", "channel": ch, "prediction": {"num_users": 3}}, "<t>")


def _lag_corr(h, lag):
    """Real part of the normalised correlation at time ``lag`` (ratio of sums over all entries)."""
    return float(((h[:, lag:] * h[:, :-lag].conj()).mean() / h.abs().square().mean()).real)


def _freq_corr(h, lag):
    """Complex normalised correlation between subcarriers ``lag`` apart (ratio of sums)."""
    return complex((h[..., lag:] * h[..., :-lag].conj()).mean() / h.abs().square().mean())


@pytest.mark.parametrize("model", MODELS)
def test_shape_dtype_and_unit_gain_per_user(model):
    sc = _sc(model, num_subcarriers=12)
    h = linksim.ChannelSource(sc, seed=0).sample(4, speed_kmh=30.0, num_time=5)
    assert h.shape == (4, 5, 3, 4, 12) and h.dtype == torch.complex64
    assert torch.isfinite(h.real).all() and torch.isfinite(h.imag).all()
    p = h.abs().square().mean(dim=(1, 3, 4))            # per (drop, user)
    assert torch.allclose(p, torch.ones_like(p), atol=1e-4)


def test_double_precision_output():
    sc = _sc("cdl", num_subcarriers=12).replace(run={"precision": "double"})
    h = linksim.ChannelSource(sc, seed=0).sample(2, num_time=2)
    assert h.dtype == torch.complex128 and h.shape == (2, 2, 3, 4, 12)


@pytest.mark.parametrize("model", MODELS)
def test_same_seed_identical_other_seed_different(model):
    sc = _sc(model, num_subcarriers=12)
    a = linksim.ChannelSource(sc, seed=11).sample(3, num_time=3)
    b = linksim.ChannelSource(sc, seed=11).sample(3, num_time=3)
    c = linksim.ChannelSource(sc, seed=12).sample(3, num_time=3)
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.1
    # the running counter gives the next batch other drops; a new source replays them
    src = linksim.ChannelSource(sc, seed=11)
    first, second = src.sample(3, num_time=3), src.sample(3, num_time=3)
    assert torch.equal(first, a) and (first - second).abs().mean() > 0.1


@pytest.mark.parametrize("model,indoor", [("uma", 0.0), ("uma", 0.5), ("umi", 0.8), ("rma", 0.5)])
def test_a_batch_depends_on_its_seed_alone(model, indoor):
    """A seeded batch is the same in a fresh source and in one that drew other batches (another
    shape, then the same shape at another speed) first: nothing of a process's history leaks into a drop (Sionna keeps the
    first call's indoor distances unless they are passed in)."""
    sc = _sc(model, num_subcarriers=12, indoor_probability=indoor)
    fresh = linksim.ChannelSource(sc, seed=0).sample(3, speed_kmh=60.0, num_time=3, seed=77)
    used = linksim.ChannelSource(sc, seed=0)
    used.sample(5, speed_kmh=100.0, num_time=3, num_users=2, seed=2)
    used.sample(3, speed_kmh=10.0, num_time=3, seed=1)
    again = used.sample(3, speed_kmh=60.0, num_time=3, seed=77)
    assert torch.equal(fresh, again)


@pytest.mark.parametrize("model", ("umi", "rma", "cdl"))
def test_time_correlation_follows_jakes_and_falls_with_speed(model):
    """Lag-1 correlation ~ J0(2 pi f_D dt) (uniform horizontal directions) within 0.03, decreasing
    with speed; the same drops at 0 km/h do not change over time."""
    sc = _sc(model)
    src = linksim.ChannelSource(sc, seed=4)
    rho = []
    for kmh in (10.0, 50.0, 100.0):
        h = src.sample(32, speed_kmh=kmh, num_users=4, num_time=2, seed=5)
        fd = kmh / 3.6 * sc.channel.carrier_hz / 299_792_458.0
        ref = j0(2 * math.pi * fd * sc.channel.sample_spacing_s)
        rho.append(_lag_corr(h, 1))
        assert abs(rho[-1] - ref) < 0.03, (model, kmh, rho[-1], ref)
    assert rho[0] > rho[1] > rho[2]
    still = src.sample(4, speed_kmh=0.0, num_time=3, seed=5)
    assert torch.allclose(still[:, 1:], still[:, :1].expand_as(still[:, 1:]), atol=1e-5)


def test_system_level_models_follow_tr38901_delay_spreads():
    """NLOS median delay spreads at 2.4 GHz (TR 38.901 Table 7.5-6): RMa ~37 ns < UMi ~110 ns < UMa
    ~400 ns, so subcarriers 1.8 MHz apart are most correlated in RMa and least in UMa."""
    corr = {m: abs(_freq_corr(linksim.ChannelSource(_sc(m), seed=2).sample(32, num_time=1), 10))
            for m in ("uma", "umi", "rma")}
    assert corr["rma"] > corr["umi"] + 0.08 and corr["umi"] > corr["uma"] + 0.08, corr


# TR 38.901 Table 7.7.1-1 (CDL-A): normalised delays, powers [dB], AoD and ZoD [deg]; cASD = 5, cZSD = 3
CDL_A_DELAY = [0.0, 0.3819, 0.4025, 0.5868, 0.4610, 0.5375, 0.6708, 0.5750, 0.7618, 1.5375, 1.8978, 2.2242,
               2.1718, 2.4942, 2.5119, 3.0582, 4.0810, 4.4579, 4.5695, 4.7966, 5.0066, 5.3043, 9.6586]
CDL_A_POWER_DB = [-13.4, 0.0, -2.2, -4.0, -6.0, -8.2, -9.9, -10.5, -7.5, -15.9, -6.6, -16.7, -12.4, -15.2,
                  -10.8, -11.3, -12.7, -16.2, -18.3, -18.9, -16.6, -19.9, -29.7]
CDL_A_AOD = [-178.1, -4.2, -4.2, -4.2, 90.2, 90.2, 90.2, 121.5, -81.7, 158.4, -83.0, 134.8, -153.0, -172.0,
             -129.9, -136.0, 165.4, 148.4, 132.7, -118.6, -154.1, 126.5, -56.2]
CDL_A_ZOD = [50.2, 93.2, 93.2, 93.2, 122.0, 122.0, 122.0, 150.2, 55.2, 26.4, 126.4, 171.6, 151.4, 157.2, 47.2,
             40.4, 43.3, 161.8, 10.8, 16.7, 171.7, 22.7, 144.9]
# Table 7.5-3: ray offset angles within a cluster (20 rays)
RAY_OFFSETS = np.array([s * a for a in (0.0447, 0.1413, 0.2492, 0.3715, 0.5129, 0.6797, 0.8844, 1.1481,
                                        1.5195, 2.1551) for s in (1, -1)])


def _cdl_a_reference(delta_f_hz, delay_spread_s):
    """E[H(f + df) H*(f)] / E|H|^2 at one BS antenna: sum_n P_n g_n exp(-j 2 pi df tau_n), where g_n
    is the cluster's mean BS element gain (Table 7.3-1 pattern, V-pol, boresight +x) over its rays."""
    zod = np.array(CDL_A_ZOD)[:, None] + 3.0 * RAY_OFFSETS
    phi = (np.array(CDL_A_AOD)[:, None] + 5.0 * RAY_OFFSETS + 180.0) % 360.0 - 180.0
    a_db = -np.minimum(np.minimum(12 * ((zod - 90) / 65) ** 2, 30) + np.minimum(12 * (phi / 65) ** 2, 30), 30)
    w = 10 ** (np.array(CDL_A_POWER_DB) / 10) * (10 ** (a_db / 10)).mean(1)
    tau = np.array(CDL_A_DELAY) * delay_spread_s
    return complex((w * np.exp(-2j * np.pi * delta_f_hz * tau)).sum() / w.sum())


@pytest.mark.parametrize("ds", (100e-9, 300e-9))
def test_cdl_frequency_correlation_matches_profile(ds):
    """The raw CDL links (before per-user normalisation, which reweights links) have the frequency
    correlation of the CDL-A power delay profile seen through the BS element pattern."""
    sc = _sc("cdl", cdl_profile="A", delay_spread_s=ds)
    h = CDLLinks(sc.channel, "single", "cpu")(128, 0.0, 0.0, 4, 1, seed=3)     # 512 links
    assert h.shape == (128, 1, 4, 4, 48)
    # estimation error at 512 links: <= 0.03 measured over seeds (converges to ~0.01 with 2048)
    for lag in (6, 12, 24):
        ref = _cdl_a_reference(lag * sc.channel.subcarrier_spacing_hz, ds)
        assert abs(_freq_corr(h, lag) - ref) < 0.05, (ds, lag, _freq_corr(h, lag), ref)


def test_cdl_delay_spread_lowers_frequency_correlation():
    corr = {ds: abs(_freq_corr(linksim.ChannelSource(_sc("cdl", delay_spread_s=ds), seed=1)
                               .sample(16, num_time=1), 24))
            for ds in (30e-9, 100e-9, 300e-9)}
    assert corr[30e-9] > corr[100e-9] + 0.02 and corr[100e-9] > corr[300e-9] + 0.1, corr
    # a LOS profile (CDL-D, K-factor 13.3 dB) stays correlated where NLOS CDL-A does not
    los = abs(_freq_corr(linksim.ChannelSource(_sc("cdl", cdl_profile="D", delay_spread_s=300e-9), seed=1)
                         .sample(16, num_time=1), 24))
    assert los > corr[300e-9] + 0.1


@pytest.mark.parametrize("key,value", [("model", "umx"), ("cdl_profile", "F"), ("cdl_profile", "a"),
                                       ("delay_spread_s", 0.0), ("delay_spread_s", 1e-3),
                                       ("cdl_profile", 3)])
def test_bad_channel_keys_name_the_key(key, value):
    with pytest.raises(linksim.LinksimError, match=rf"<f>: channel\.{key}") as e:
        from_dict({"channel": {"model": "cdl", key: value}}, "<f>")
    assert "\n" not in str(e.value) and repr(value) in str(e.value)


def test_hash_counts_cdl_keys_only_for_cdl():
    uma = _sc("uma")
    assert uma.replace(channel={"cdl_profile": "C", "delay_spread_s": 3e-7}).hash == uma.hash
    cdl = _sc("cdl")
    assert cdl.replace(channel={"cdl_profile": "C"}).hash != cdl.hash
    assert cdl.replace(channel={"delay_spread_s": 3e-7}).hash != cdl.hash


@pytest.mark.parametrize("model", ("umi", "rma", "cdl"))
def test_shipped_scenarios_differ_from_quick_only_in_the_channel_model(model):
    quick = linksim.load_scenario("scenarios/quick.toml")
    other = linksim.load_scenario(f"scenarios/quick-{model}.toml")
    assert other.channel.model == model
    a, b = linksim.scenario.to_dict(quick), linksim.scenario.to_dict(other)
    for d in (a, b):
        d.pop("name")
        for key in ("model", "cdl_profile", "delay_spread_s"):
            d["channel"].pop(key)
    assert a == b


def test_agent_trained_on_uma_runs_on_other_models_but_not_other_sizes():
    """Generalisation: a different channel model is allowed, different sizes are refused."""
    sc = linksim.load_scenario("scenarios/quick-cdl.toml")
    pred = linksim.blocks.get("agent:agents/gru", kind="predictor", scenario=sc)
    h = linksim.ChannelSource(sc, seed=0).sample(1, num_users=1)
    out = pred(h[:, :16])
    assert out.shape == (1, 4, 1, 16, 48) and out.dtype == torch.complex64
    small = sc.replace(channel={"num_subcarriers": 24})
    with pytest.raises(linksim.LinksimError,
                       match=r"trained for other sizes.*num_subcarriers=48 \(scenario: 24\)"):
        linksim.blocks.get("agent:agents/gru", kind="predictor", scenario=small)
