"""``train.loss_weights = "uncertainty"``: the learned log-variance weighting of the multi-task loss
(linksim.training.weights), its agent.toml key and a tiny multi-task run that logs the weights."""
import csv
import math
import re

import pytest
import torch

from linksim.agents.spec import read_agent
from linksim.errors import LinksimError
from linksim.training import train_agent
from linksim.training.weights import UncertaintyWeights, uncertainty_objective

from test_llm_agent import AGENT, SCENARIO


def test_objective_is_kendalls_for_a_positive_loss_and_reaches_the_log_variance():
    s = torch.tensor(0.3, requires_grad=True)
    theta = torch.tensor(2.0, requires_grad=True)
    loss = 4 * theta ** 2                                      # 16
    j = uncertainty_objective(loss, s)
    assert j.item() == pytest.approx(math.exp(-0.3) * 16 + 0.3)
    j.backward()
    assert s.grad.item() == pytest.approx(1 - math.exp(-0.3) * 16)
    assert theta.grad.item() == pytest.approx(math.exp(-0.3) * 16)               # w * dL/dtheta


def test_negative_loss_fits_the_weight_to_its_magnitude():
    s = torch.tensor(0.0, requires_grad=True)
    theta = torch.tensor(1.0, requires_grad=True)
    uncertainty_objective(-10 * theta, s).backward()
    assert theta.grad.item() == pytest.approx(-10.0)              # w * dL/dtheta, w = 1
    assert s.grad.item() == pytest.approx(1 - 10.0)               # as for a loss of +10
    s = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.05)
    for _ in range(400):                                     # -sum-rate = -10 stays: w -> 1/10, finite
        opt.zero_grad()
        uncertainty_objective(torch.tensor(-10.0), s).backward()
        opt.step()
    assert abs(math.exp(-s.item()) - 0.1) < 0.02


def test_toy_run_weights_the_larger_loss_down():
    """Two tasks whose losses differ by 100x (each with a noise floor): the weights move apart,
    the large one's down, towards w_t = 1 / L_t."""
    weights = UncertaintyWeights({"big": 1.0, "small": 1.0})
    theta = torch.tensor([1.0, 1.0], requires_grad=True)
    opt = torch.optim.Adam([theta, *weights.parameters()], lr=0.05)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        noise = 1 + 0.1 * torch.randn(2, generator=g)
        losses = {"big": 100 * (noise[0] + theta[0] ** 2), "small": noise[1] + theta[1] ** 2}
        opt.zero_grad()
        sum(weights(t, v) for t, v in losses.items()).backward()
        assert all(p.grad is not None and p.grad != 0 for p in weights.parameters())
        opt.step()
    w_big, w_small = weights.weight("big"), weights.weight("small")
    assert w_big < 0.1 * w_small
    assert 0.3 < w_small < 3 and 0.003 < w_big < 0.03
    assert abs(theta[0].item()) < 0.1            # the weighted-down task still trains


def test_weights_start_at_the_given_values():
    w = UncertaintyWeights({"prediction": 1.0, "detection": 5.0, "precoding": 0.2})
    assert [round(w.weight(t), 6) for t in ("prediction", "detection", "precoding")] == [1.0, 5.0, 0.2]
    with pytest.raises(ValueError, match="start > 0"):
        UncertaintyWeights({"prediction": 0.0})


def _agent(root, train_extra):
    (root / "tiny.toml").write_text(SCENARIO)
    d = root / "agent"
    d.mkdir()
    (d / "agent.toml").write_text(AGENT.format(scenario=root / "tiny.toml") + train_extra)
    return d


@pytest.mark.parametrize("value, ok", [('"uncertainty"', True), ("{ detection = 2 }", True),
                                       ('"learned"', False), ('"Uncertainty"', False)])
def test_loss_weights_key_accepts_uncertainty_and_refuses_other_strings(tmp_path, value, ok):
    d = _agent(tmp_path, f"loss_weights = {value}\n")
    if ok:
        spec = read_agent(d)
        assert spec.train.loss_weights == ("uncertainty" if "uncertainty" in value else {"detection": 2.0})
    else:
        with pytest.raises(LinksimError, match=r"train\.loss_weights must map tasks to numbers or be "
                                               r"\"uncertainty\"") as e:
            read_agent(d)
        assert "\n" not in str(e.value)


def test_multitask_run_learns_and_logs_the_weights(tmp_path):
    from safetensors.torch import load_file

    d = _agent(tmp_path, 'loss_weights = "uncertainty"\n')
    text = (d / "agent.toml").read_text()
    for key, value in (("steps", 6), ("val_every", 3), ("checkpoint_every", 3), ("label_steps", 3)):
        text = re.sub(rf"\n{key} = \d+", f"\n{key} = {value}", text)
    (d / "agent.toml").write_text(text)
    train_agent(d, progress=False)
    rows = [r for r in csv.DictReader(open(d / "train_log.csv")) if r["metric"] == "loss_weight"]
    assert [int(r["step"]) for r in rows] == [3] * 3 + [6] * 3
    last = {r["task"]: float(r["value"]) for r in rows if r["step"] == "6"}
    start = {"prediction": 1.0, "detection": 5.0, "precoding": 0.2}
    assert last.keys() == start.keys() and all(v > 0 and v != start[t] for t, v in last.items())
    assert not any("log_var" in k for k in load_file(str(d / "model.safetensors")))   # not in the agent
    ckpt = load_file(str(d / "checkpoint" / "model.safetensors"))                    # but checkpointed
    assert {f"weights.log_vars.{t}" for t in start} <= set(ckpt)


def test_resume_after_kill_continues_with_the_same_learned_weights(tmp_path, monkeypatch):
    """The log-variances are in the checkpoint: killed at step 5 of 6 and resumed, the run logs
    the same weights and losses and ends with the same agent as an uninterrupted one."""
    from safetensors.torch import load_file

    from linksim.training.trainer import _LossModule

    dirs = []
    for name in ("full", "killed"):
        (tmp_path / name).mkdir()
        d = _agent(tmp_path / name, 'loss_weights = "uncertainty"\n')
        text = (d / "agent.toml").read_text()
        for key, value in (("steps", 6), ("val_every", 3), ("checkpoint_every", 3), ("label_steps", 3)):
            text = re.sub(rf"\n{key} = \d+", f"\n{key} = {value}", text)
        (d / "agent.toml").write_text(text)
        dirs.append(d)
    train_agent(dirs[0], progress=False)
    original, calls = _LossModule.forward, {"n": 0}

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] == 3 * 4 + 2:             # step 5 of 6, second task
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(_LossModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        train_agent(dirs[1], progress=False)
    monkeypatch.setattr(_LossModule, "forward", original)
    train_agent(dirs[1], progress=False)
    a, b = (load_file(str(d / "model.safetensors")) for d in dirs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [[(r["loss"], r["metric"], r["value"]) for r in csv.DictReader(open(d / "train_log.csv"))
            if r["metric"] != "data_wait_s"] for d in dirs]
    assert log[0] == log[1] and any(m == "loss_weight" for _, m, _ in log[0])
