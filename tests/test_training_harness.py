"""The harness that trains until an agent stops improving: fresh drops every step (a function of
seed and step), exact resume, the plateau rule keeping the best weights, and learning curves."""
import csv
import math

import pytest
import torch
from safetensors.torch import load_file

import linksim
from linksim.channel import ChannelSource
from linksim.training import train_agent
from linksim.training import trainer as trainer_mod
from linksim.training.curves import plot_learning_curve, read_curves
from linksim.training.data import FreshData, drops_per_batch
from linksim.training.stopping import Plateau

from test_training import kill_during_training, make_agent



def fresh_agent(root, tiny_toml, kind, steps, extra=""):
    """An agent of test_training's recipe on fresh drops every step (no pool)."""
    d = make_agent(root, tiny_toml, kind, steps=steps, extra=extra + "\ndata_workers = 1")
    toml = d / "agent.toml"
    toml.write_text(toml.read_text().replace("pool_drops = 8", "pool_drops = 0"))
    return d


def _weights(d):
    return load_file(str(d / "model.safetensors"))


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fresh_batches_are_a_function_of_seed_and_step(tiny_scenario):
    sc = tiny_scenario()
    from linksim.agents.spec import TrainSpec
    dims = linksim.agents.Dims.from_scenario(sc, "detection")
    drops = drops_per_batch("detection", sc, 64, "", 2, 1)
    assert drops == 2                                   # 48 subcarriers per drop, 64 samples

    def data():
        return FreshData("detection", ChannelSource(sc, seed=5), drops, 30.0, 2, 1, dims, sc, TrainSpec(), 0)

    a, b = data().batch(64, seed=11), data().batch(64, seed=11)
    assert all(torch.equal(a[k], b[k]) for k in ("y", "h", "x"))
    c = data().batch(64, seed=12)
    assert not torch.equal(a["h"], c["h"])               # another step: other drops


def test_fresh_data_resume_after_kill_equals_uninterrupted(tmp_path, tiny_toml, monkeypatch):
    full = fresh_agent(tmp_path / "a", tiny_toml, "dnn", 20, "patience = 0")
    train_agent(full, progress=False)
    killed = fresh_agent(tmp_path / "b", tiny_toml, "dnn", 20, "patience = 0")
    kill_during_training(killed, monkeypatch)
    train_agent(killed, progress=False)
    assert _same(_weights(full), _weights(killed))


def test_plateau_rule():
    p = Plateau(patience=2, min_delta=0.1)
    assert [p.update(s, i) for i, s in enumerate([-10.0, -11.0, -11.05, -10.9, -12.0], 1)] == \
        [True, True, False, False, True]
    assert p.best_step == 5 and not p.stop()
    p.update(-12.0, 6)
    p.update(-11.0, 7)
    assert p.stop() and p.best == -12.0
    assert not Plateau(patience=0, min_delta=0.0).stop()


def _scripted_validations(monkeypatch, scores_db: list[float]) -> list[dict]:
    """Make the validations (step 0, then every val_every) report the detection SER 10^(s/10) of
    ``scores_db`` in turn; returns the list that receives the model's weights at each of them."""
    scripted, real, snapshots = iter(scores_db), trainer_mod._validate_all, []

    def validate(model, runs):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        out = real(model, runs)
        out["detection"]["val_ser"] = 10 ** (next(scripted) / 10)
        return out

    monkeypatch.setattr(trainer_mod, "_validate_all", validate)
    return snapshots


def test_training_stops_on_a_plateau_and_keeps_the_best_weights(tmp_path, tiny_toml, monkeypatch):
    """Validation scores scripted to improve until step 20 and then worsen: with patience 2 the run
    stops after the validation at step 40, and the agent's weights are the ones the model had at
    the validation of step 20 (snapshotted there, independently of how the harness keeps them).
    The starting weights are validated first (step 0)."""
    snapshots = _scripted_validations(monkeypatch, [-5.0, -10.0, -12.0, -11.0, -11.5, -13.0, -14.0])
    d = make_agent(tmp_path, tiny_toml, "dnn", steps=60, extra="patience = 2\nmin_delta = 0.01")
    result = train_agent(d, progress=False)
    assert result["stopped"] == "plateau" and result["steps"] == 40 and result["best_step"] == 20
    assert math.isclose(result["val_ser"], 10 ** (-12.0 / 10), rel_tol=1e-5)
    assert len(snapshots) == 5
    kept = _weights(d)
    assert _same(kept, snapshots[2]) and not _same(kept, snapshots[4]) and not _same(kept, snapshots[0])
    curves = read_curves(d)["detection"]
    assert curves["samples"] == [0, 320, 640, 960, 1280] and curves["kept"] == 640
    assert set(curves["references"]) == {"lmmse"}


def test_learning_curve_reads_the_log_and_draws(tmp_path, tiny_toml):
    d = make_agent(tmp_path, tiny_toml, "dnn", steps=20, extra="patience = 0")
    train_agent(d, progress=False)
    with open(d / "train_log.csv") as f:
        logged = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "val_ser"]
    c = read_curves(d)["detection"]
    assert c["values"] == logged and c["samples"] == [0, 320, 640] and c["kept"] == 640
    files = plot_learning_curve(d)
    assert [p.name for p in files] == ["learning_curve.png", "learning_curve.pdf"]
    assert all(p.stat().st_size > 1000 for p in files)
    from linksim.cli import main
    assert main(["plot", str(d)]) == 0


def test_drops_reuse_shares_one_draw_between_steps(tiny_scenario):
    """drops_reuse = R: steps 0..R-1 sample their batches from one draw of drops (that of step 0),
    step R from the next; every batch stays a function of (seed, step)."""
    from linksim.agents.spec import TrainSpec
    from linksim.config import derive_seed
    from linksim.training.data import StepBatches
    sc = tiny_scenario()
    dims = linksim.agents.Dims.from_scenario(sc, "detection")

    def batches():
        d = FreshData("detection", ChannelSource(sc, seed=5), 1, 30.0, 2, 1, dims, sc, TrainSpec(), 0, reuse=3)
        return StepBatches({"detection": (d, 32)}, lambda step, task: 1000 + step, lambda step: "rate")

    def keys(h):                       # one key per channel matrix (a drop's subcarrier)
        return {complex(v) for v in h[:, 0, 0]}

    b = batches()
    h = [b[s]["detection"]["h"] for s in range(4)]
    draw = ChannelSource(sc, seed=5).sample(1, speed_kmh=30.0, num_users=2, num_time=1,
                                            seed=derive_seed(1000, "drops"))
    first = keys(b.datas["detection"][0].chain.train_samples(draw, "", 0))
    assert keys(h[0]) | keys(h[1]) | keys(h[2]) <= first and not keys(h[3]) & first
    assert not torch.equal(h[0], h[1])                        # other samples of the same draw
    assert torch.equal(batches()[2]["detection"]["h"], h[2])  # step 2 alone: the same batch


def test_a_model_serving_a_range_of_k_is_validated_at_every_k(tmp_path, tiny_toml):
    """cnn with users = [1, 2] (K_max 2): validation at K = 1 and K = 2, each beside WMMSE at that
    K; K = 2 is the scenario's own K, so its metrics equal the main ones (the same batches)."""
    extra = "label_steps = 2\ntx_power_dbw = [0.0, 5.0]"
    d = make_agent(tmp_path, tiny_toml, "cnn", steps=4, model="users = [1, 2]", extra=extra)
    r = train_agent(d, progress=False)
    assert r["val_sum_rate_k2"] == r["val_sum_rate"] and r["val_sum_rate_wmmse_k2"] == r["val_sum_rate_wmmse"]
    assert r["val_sum_rate_wmmse_k1"] < r["val_sum_rate_wmmse_k2"]            # one user: less rate
    assert math.isclose(r["val_rate_ratio_k1"], r["val_sum_rate_k1"] / r["val_sum_rate_wmmse_k1"], rel_tol=1e-5)
    assert set(read_curves(d)["precoding"]["references"]) == {"wmmse"}


def test_the_starting_weights_are_kept_when_training_never_beats_them(tmp_path, tiny_toml, monkeypatch):
    """Scripted validations that improve, but never reach the start's: no plateau (patience counts
    trained validations), and the agent keeps its starting weights and says so (best_step 0)."""
    snapshots = _scripted_validations(monkeypatch, [-20.0, -10.0, -11.0, -12.0])
    d = make_agent(tmp_path, tiny_toml, "dnn", steps=30, extra="patience = 2")
    result = train_agent(d, progress=False)
    assert result["best_step"] == 0 and result["steps"] == 30 and result["stopped"] == "steps"
    assert _same(_weights(d), snapshots[0]) and not _same(_weights(d), snapshots[-1])


def test_validations_of_the_label_stage_do_not_use_up_the_patience():
    p = Plateau(patience=2, min_delta=0.1)
    assert p.update(-10.0, 1)
    assert not p.update(-9.0, 2, count=False) and not p.update(-9.0, 3, count=False)
    assert not p.stop() and p.best_step == 1
    p.update(-9.0, 4), p.update(-9.0, 5)
    assert p.stop()


def test_count_flops_counts_the_first_step(tmp_path, tiny_toml, monkeypatch):
    """The DNN detector is Linear layers: the forward pass of its one training step costs
    2 x in x out FLOPs per row through each layer (counted here by patching nn.Linear, with
    gradients on: validation runs without them), and the step 2 to 3 times that (the backward's
    weight and input gradients; the first layer needs no input gradient); with the option off
    nothing is recorded."""
    real, fwd = torch.nn.Linear.forward, {"flops": 0}

    def counted(self, x):
        if torch.is_grad_enabled():
            fwd["flops"] += 2 * x.numel() // x.shape[-1] * self.in_features * self.out_features
        return real(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", counted)
    d = make_agent(tmp_path, tiny_toml, "dnn", steps=1, extra="patience = 0")
    result = train_agent(d, progress=False, count_flops=True)
    assert fwd["flops"] > 0 and 2 * fwd["flops"] <= result["step_flops"] <= 3.2 * fwd["flops"]
    d2 = make_agent(tmp_path / "b", tiny_toml, "dnn", steps=1, extra="patience = 0")
    assert "step_flops" not in train_agent(d2, progress=False)


LLM_BF16 = """[agent]
arch = "llm"
scenario = "{scenario}"
[model]
users = [2, 2]
[model.backbone]
source = "tiny"
layers = 2
random_init = true
[train]
steps = 2
batch_size = 4
val_drops = 4
label_steps = 1
val_every = 2
checkpoint_every = 2
data_workers = 0
mixed_precision = "bf16"
data_device = "accelerator"
"""


def test_the_multitask_llm_trains_under_bf16_autocast(tmp_path, tiny_toml):
    """The GPU recipe's options (bf16 autocast, drops drawn on the training device) on the CPU:
    every task's head runs under autocast (complex outputs are built in float32) and the losses
    and step FLOPs are finite."""
    d = tmp_path / "llm"
    d.mkdir()
    (d / "agent.toml").write_text(LLM_BF16.format(scenario=tiny_toml()))
    result = train_agent(d, progress=False, count_flops=True)
    assert result["steps"] == 2 and result["step_flops"] > 0
    losses = [float(r["loss"]) for r in csv.DictReader(open(d / "train_log.csv")) if r["loss"]]
    assert len(losses) == 2 * 4 and all(math.isfinite(v) for v in losses)    # 3 tasks + "all"


def test_precoding_score_of_a_range_of_k_weighs_every_k_alike():
    """With per-K validation the score is the mean over K of -10 log10(rate / WMMSE's rate): a
    model that gains 10% at K = 8 and loses 10% at K = 3 scores as much lower as -10 log10(1.1)
    and -10 log10(0.9) average out; without per-K metrics, -10 log10 of the rate."""
    from linksim.chains import chain_class
    score = chain_class("precoding").score
    m = {"val_sum_rate": 17.0, "val_rate_ratio_k3": 0.9, "val_rate_ratio_k8": 1.1}
    assert score(m) == pytest.approx((-10 * math.log10(0.9) - 10 * math.log10(1.1)) / 2)
    assert score({"val_sum_rate": 10.0}) == pytest.approx(-10.0)
