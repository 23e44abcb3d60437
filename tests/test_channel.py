"""ChannelSource against physics (Jakes/Clarke correlation) and its own contracts."""
import math

import pytest
import torch
from scipy.special import j0

import linksim
from linksim.scenario import from_dict


def _lag_corr(h, lag):
    """Real part of the normalised time correlation at ``lag`` (averaged over all entries)."""
    c = (h[:, lag:] * h[:, :-lag].conj()).mean() / h.abs().square().mean()
    return float(c.real)


def test_shape_dtype_and_unit_gain(tiny_scenario):
    sc = tiny_scenario()
    h = linksim.ChannelSource(sc, seed=3).sample(8)
    assert h.shape == (8, 20, 2, 8, 48) and h.dtype == torch.complex64
    # every user of every drop is normalised to unit mean gain per entry
    p = h.abs().square().mean(dim=(1, 3, 4))
    assert torch.allclose(p, torch.ones_like(p), atol=1e-4)


def test_same_seed_identical_other_seed_different(tiny_scenario):
    sc = tiny_scenario()
    a = linksim.ChannelSource(sc, seed=7).sample(4)
    b = linksim.ChannelSource(sc, seed=7).sample(4)
    c = linksim.ChannelSource(sc, seed=8).sample(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_uma_time_correlation_follows_jakes(tiny_scenario):
    """3GPP UMa with uniformly random directions: lag-1 correlation ~ J0(2 pi f_D dt) within 0.02
    (DESIGN.md §6). Longer lags decay more slowly than Clarke's isotropic ring (rays arrive with
    elevation and finite angular spread), so beyond lag 1 only the ordering in speed is checked."""
    corr = {}
    for speed in (30.0, 90.0):
        sc = tiny_scenario(channel={"speed_kmh": speed})
        h = linksim.ChannelSource(sc, seed=1).sample(96, num_users=4, num_time=4)
        fd = speed / 3.6 * sc.channel.carrier_hz / 299_792_458.0
        ref = j0(2 * math.pi * fd * sc.channel.sample_spacing_s)
        assert abs(_lag_corr(h, 1) - ref) < 0.02, (speed, _lag_corr(h, 1), ref)
        corr[speed] = [_lag_corr(h, lag) for lag in (1, 2, 3)]
        assert corr[speed][0] > corr[speed][1] > corr[speed][2]
    assert all(a > b for a, b in zip(corr[30.0], corr[90.0]))


def test_rayleigh_is_iid_unit_gain_and_clarke_in_time():
    sc = from_dict({"channel": {"model": "rayleigh", "bs_rows": 2, "bs_cols": 2, "speed_kmh": 60.0}})
    src = linksim.ChannelSource(sc, seed=0)
    h = src.sample(64, num_users=2, num_time=6)
    n = h.numel()
    assert abs(float(h.abs().square().mean()) - 1) < 4 * math.sqrt(1 / (n / 6))  # per-entry E|h|^2 = 1
    fd = 60 / 3.6 * 2.4e9 / 299_792_458.0
    for lag in (1, 3, 5):
        assert abs(_lag_corr(h, lag) - j0(2 * math.pi * fd * lag * 0.5e-3)) < 0.02
    # i.i.d. across antennas: cross-correlation of neighbouring antennas ~ 0
    one = src.sample(512, num_users=1, num_time=1)[:, 0, 0]
    cross = (one[:, 0] * one[:, 1].conj()).mean().abs()
    assert float(cross) < 4 / math.sqrt(one.shape[0] * one.shape[-1])


def test_speed_range_and_bad_speed(tiny_scenario):
    src = linksim.ChannelSource(tiny_scenario(), seed=0)
    assert src.sample(2, speed_kmh=(10.0, 100.0), num_time=2).shape[1] == 2
    with pytest.raises(linksim.LinksimError, match="speed_kmh"):
        src.sample(2, speed_kmh=-5.0)


def test_dataset_export(tiny_scenario, tmp_path):
    import h5py
    from linksim.channel.dataset import export_dataset

    sc = tiny_scenario()
    out = export_dataset(sc, 12, tmp_path / "d.h5", num_users=sc.prediction.num_users,
                         num_time=sc.prediction.history + sc.prediction.horizon, seed=5, progress=False,
                         attrs={"task": "prediction"})
    with h5py.File(out) as f:
        assert f["h"].shape == (12, 20, 2, 8, 48)
        assert f.attrs["seed"] == 5 and f.attrs["scenario_hash"] == sc.hash
        first = torch.from_numpy(f["h"][:8])
    assert torch.equal(first, linksim.ChannelSource(sc, seed=5).sample(8, num_users=2))


def test_dataset_and_pool_bars_are_labelled(tiny_scenario, tmp_path, capsys):
    """`linksim dataset` and the training pools show what they draw on their progress bars."""
    from linksim.channel.dataset import export_dataset
    from linksim.channel.pool import channel_pool

    sc = tiny_scenario()
    export_dataset(sc, 2, tmp_path / "d.h5", num_users=2, num_time=1, progress=True)
    channel_pool(sc, 2, 7, 30.0, tmp_path / "cache", num_users=2, num_time=1, tag="detection")
    err = capsys.readouterr().err
    assert "dataset d.h5: 100%" in err and "detection channel pool (seed 7): 100%" in err


def test_two_processes_drawing_the_same_pool_at_once(tiny_scenario, tmp_path):
    """Two trainers that need the same validation pool write it at the same moment (two lanes of
    a training queue): both get the drops, and the cache holds one whole file and no leftovers."""
    import multiprocessing as mp

    sc = tiny_scenario()
    ctx = mp.get_context("fork")
    cache = tmp_path / "cache"
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_draw_pool_after, args=(start, sc, cache)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    from linksim.channel.pool import channel_pool
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].endswith(".h5")
    args = (24, 7, 30.0)
    kw = dict(num_users=2, num_time=1, tag="detection", progress=False)
    assert torch.equal(channel_pool(sc, *args, cache, **kw), channel_pool(sc, *args, tmp_path / "alone", **kw))


def _draw_pool_after(barrier, sc, cache):
    from linksim.channel.pool import channel_pool
    barrier.wait()
    channel_pool(sc, 24, 7, 30.0, cache, num_users=2, num_time=1, tag="detection", progress=False)
