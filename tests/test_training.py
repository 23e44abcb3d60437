"""The training harness: loss falls, save -> load is exact, resume is exact, bad agents are refused."""
import shutil

import pytest
import torch
from safetensors.torch import load_file

import linksim
from linksim.agents import load_agent
from linksim.errors import LinksimError
from linksim.sweep import sweep
from linksim.training import train_agent
from linksim.training.trainer import _LossModule

TOML = """[agent]
arch = "{kind}"
scenario = "{scenario}"
seed = 3

[model]
{model}

[train]
steps = {steps}
batch_size = 32
lr = 3e-3
lr_min = 1e-4
pool_drops = 8
val_drops = 4
snr_db = [5.0, 15.0]
val_every = 10
checkpoint_every = 10
{extra}
"""


def make_agent(root, tiny_toml, kind="detnet", steps=20, model="", extra=""):
    scen = tiny_toml()
    d = root / kind
    d.mkdir(parents=True)
    (d / "agent.toml").write_text(TOML.format(kind=kind, scenario=scen, steps=steps, model=model,
                                              extra=extra))
    return d


def kill_during_training(folder, monkeypatch, at_call: int = 15) -> None:
    """Train ``folder`` and interrupt it (KeyboardInterrupt) at the ``at_call``-th loss evaluation,
    as Ctrl-C would; the checkpoints written before stay."""
    original, calls = _LossModule.forward, {"n": 0}

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(_LossModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        train_agent(folder, progress=False)
    monkeypatch.setattr(_LossModule, "forward", original)


def _log(d):
    import csv
    return list(csv.DictReader(open(d / "train_log.csv")))


def test_detector_loss_falls_and_metrics_recorded(tmp_path, tiny_toml):
    """The DNN detector starts from random weights, so 30 steps must cut its loss: the mean of the
    last 5 steps is below 0.9 x the first 5's. (OAMP-Net starts near LMMSE; its few trainable
    step sizes move its loss by less than the batch-to-batch spread in so few steps.)"""
    d = make_agent(tmp_path, tiny_toml, "dnn", steps=30)
    result = train_agent(d, progress=False)
    losses = [float(r["loss"]) for r in _log(d) if r["loss"]]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    assert 0 <= result["val_ser"] <= 1 and result["dims"]["num_bs_antennas"] == 8
    text = (d / "agent.toml").read_text()
    assert "[result]" in text and "val_ser" in text and 'arch = "dnn"' in text


def test_save_load_identical_outputs_and_sweep_label(tmp_path, tiny_toml):
    d = make_agent(tmp_path, tiny_toml, "detnet", steps=10)
    train_agent(d, progress=False)
    sc = linksim.load_scenario(tiny_toml())
    block = load_agent(str(d), "detector", sc)
    g = torch.Generator().manual_seed(0)
    h = torch.complex(torch.randn(5, 8, 2, generator=g), torch.randn(5, 8, 2, generator=g))
    y = torch.complex(torch.randn(5, 8, 6, generator=g), torch.randn(5, 8, 6, generator=g))
    again = load_agent(str(d), "detector", sc)
    assert torch.equal(block(y, h, 0.1), again(y, h, 0.1))
    # the weights in the file are exactly the module's
    state = load_file(str(d / "model.safetensors"))
    assert all(torch.equal(state[k], v) for k, v in block.model.state_dict().items())
    st = sweep(sc, "detection", ["lmmse", f"agent:{d}"], "snr_db=10", tmp_path / "s", progress=False)
    assert {r["block"] for r in st.rows} == {"lmmse", "detnet"}


def test_resume_after_kill_equals_uninterrupted(tmp_path, tiny_toml, monkeypatch):
    full = make_agent(tmp_path / "a", tiny_toml, "dnn", steps=20)
    train_agent(full, progress=False)
    killed = make_agent(tmp_path / "b", tiny_toml, "dnn", steps=20)
    kill_during_training(killed, monkeypatch)
    assert not (killed / "model.safetensors").exists()
    train_agent(killed, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in _log(full)] == [r["loss"] for r in _log(killed)]


def test_incompatible_or_untrained_agents_are_refused(tmp_path, tiny_toml):
    d = make_agent(tmp_path, tiny_toml, "detnet", steps=5)
    sc = linksim.load_scenario(tiny_toml())
    with pytest.raises(LinksimError, match="not trained yet"):
        load_agent(str(d), "detector", sc)
    train_agent(d, progress=False)
    with pytest.raises(LinksimError, match=r"num_bs_antennas=8 \(scenario: 16\)"):
        load_agent(str(d), "detector", linksim.load_scenario("scenarios/quick.toml"))
    with pytest.raises(LinksimError, match="trained for detection; this chain needs a precoder"):
        load_agent(str(d), "precoder", sc)
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    (bad / "agent.toml").write_text((bad / "agent.toml").read_text().replace("lr = 3e-3", "lr = 'fast'"))
    with pytest.raises(LinksimError, match="train.lr: expected float"):
        train_agent(bad, progress=False)
    other = tmp_path / "other"
    shutil.copytree(d, other)
    (other / "agent.toml").write_text((other / "agent.toml").read_text().replace('"detnet"', '"oampnet"', 1))
    with pytest.raises(LinksimError, match="cannot be loaded as 'oampnet'"):
        load_agent(str(other), "detector", sc)


@pytest.mark.parametrize("kind, extra", [("cnn", "label_steps = 5\ntx_power_dbw = [0.0, 10.0]"),
                                         ("gru", "speed_kmh = [30.0, 60.0]")])
def test_precoder_and_predictor_train_through_the_harness(tmp_path, tiny_toml, kind, extra):
    d = make_agent(tmp_path, tiny_toml, kind, steps=10, extra=extra)
    result = train_agent(d, progress=False)
    key = "val_rate_ratio" if kind == "cnn" else "val_nmse_db"
    assert key in result and result[key] == result[key]   # measured, not NaN


def test_trains_on_an_exported_dataset_and_checks_it(tmp_path, tiny_toml):
    from linksim.channel.dataset import export_dataset
    sc = linksim.load_scenario(tiny_toml())
    for task in ("detection", "precoding"):
        export_dataset(sc, 6, tmp_path / f"{task[:3]}.h5", num_users=getattr(sc, task).num_users, num_time=1,
                       seed=9, progress=False, attrs={"task": task})
    d = make_agent(tmp_path, tiny_toml, "dnn", steps=3, extra=f'dataset = "{tmp_path / "det.h5"}"')
    assert train_agent(d, progress=False)["steps"] == 3
    (d / "agent.toml").write_text((d / "agent.toml").read_text().replace("det.h5", "pre.h5"))
    with pytest.raises(LinksimError, match="holds 'precoding' channels"):
        train_agent(d, progress=False, resume=False, overwrite=True)


def test_sweep_refuses_to_mix_results_of_retrained_agents(tmp_path, tiny_toml):
    d = make_agent(tmp_path, tiny_toml, "dnn", steps=3)
    train_agent(d, progress=False)
    sc = linksim.load_scenario(tiny_toml())
    sweep(sc, "detection", [f"agent:{d}"], "snr_db=10", tmp_path / "s", progress=False)
    sweep(sc, "detection", [f"agent:{d}"], "snr_db=10", tmp_path / "s", progress=False)  # same weights: fine
    train_agent(d, steps=4, resume=False, progress=False, overwrite=True)
    with pytest.raises(LinksimError, match="come from other weights"):
        sweep(sc, "detection", [f"agent:{d}"], "snr_db=10", tmp_path / "s", progress=False)


def test_training_never_replaces_trained_weights_unless_asked(tmp_path, tiny_toml, capsys):
    """A trained agent is refused (the bad-input table checks the CLI line); ``--out`` trains a
    copy and leaves the folder byte for byte; ``--force`` retrains in place."""
    from linksim.cli import main
    d = make_agent(tmp_path / "a", tiny_toml, "dnn", steps=3)
    train_agent(d, progress=False)
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    with pytest.raises(LinksimError, match="already trained"):
        train_agent(d, steps=2, progress=False)
    assert main(["train", str(d), "--steps", "2", "--out", str(tmp_path / "trial"), "--quiet"]) == 0
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()} == before
    copy = tmp_path / "trial" / "dnn"
    assert (copy / "model.safetensors").is_file() and "steps = 2" in (copy / "agent.toml").read_text()
    assert main(["train", str(d), "--steps", "2", "--force", "--restart", "--quiet"]) == 0
    assert (d / "model.safetensors").read_bytes() != before["model.safetensors"]
    capsys.readouterr()
