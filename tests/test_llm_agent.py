"""The multi-task LLM agent on a tiny random LLaMA backbone: training, prefix cache, frozen backbone,
task identifiers, storage, K range, and its one-line errors."""
import csv
import os
import subprocess
import sys

import pytest
import torch

import linksim
from linksim.agents import Dims, build_model, load_agent
from linksim.chains import chain_class
from linksim.errors import LinksimError
from linksim.llm import prompt as prompt_mod
from linksim.training import train_agent

TINY = {"backbone": {"source": "tiny", "layers": 2}, "users": [1, 4], "lora": {"dropout": 0.0}}
DIMS = Dims(num_bs_antennas=8, num_users=2, num_subcarriers=12, history=6, horizon=2,
            bits_per_symbol=4, symbols_per_sample=3)

SCENARIO = """name = "tiny-llm"
[channel]
model = "rayleigh"
bs_rows = 2
bs_cols = 4
num_subcarriers = 12
[prediction]
num_users = 2
history = 6
horizon = 2
num_samples = 8
[precoding]
num_users = 2
num_samples = 8
[detection]
num_users = 2
symbols_per_sample = 3
min_samples = 8
max_samples = 8
[run]
batch_size = 8
"""

AGENT = """[agent]
arch = "llm"
scenario = "{scenario}"
seed = 1
[model]
users = [1, 4]
[model.backbone]
source = "tiny"
layers = 2
[model.lora]
dropout = 0.0
[train]
steps = 40
batch_size = 16
lr = 3e-3
lr_min = 1e-3
pool_drops = 8
val_drops = 4
label_steps = 20
val_every = 20
checkpoint_every = 20
"""


def _randomise(model, seed=0):
    """Give every zero-initialised decoder layer and LoRA B random values (so outputs depend on
    everything upstream)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _inputs(b=3, k=2):
    g = torch.Generator().manual_seed(7)
    cplx = lambda *s: torch.randn(*s, dtype=torch.complex64, generator=g)   # noqa: E731
    h_up = cplx(b, 8, 2)
    x = cplx(b, 2, 3)
    return {"prediction": (cplx(b, 6, 2, 8, 12),),
            "detection": (h_up @ x + 0.1 * cplx(b, 8, 3), h_up, 0.01),
            "precoding": (cplx(b, k, 8), 1.0, 0.1)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    (root / "tiny.toml").write_text(SCENARIO)
    d = root / "agent"
    d.mkdir()
    (d / "agent.toml").write_text(AGENT.format(scenario=root / "tiny.toml"))
    result = train_agent(d, progress=False)
    return d, result, linksim.load_scenario(root / "tiny.toml")


def test_multitask_training_lowers_every_task_loss(trained):
    d, result, _ = trained
    rows = list(csv.DictReader(open(d / "train_log.csv")))
    for task in ("prediction", "detection", "precoding"):
        loss = [float(r["loss"]) for r in rows if r["task"] == task and r["loss"]]
        stage = [r["stage"] for r in rows if r["task"] == task and r["loss"]]
        assert len(loss) == 40
        if task == "precoding":    # labels stage (MSE) then rate stage (-sum-rate): each must fall
            lab = [v for v, s in zip(loss, stage) if s == "labels"]
            rate = [v for v, s in zip(loss, stage) if s == "rate"]
            assert min(lab[-5:]) < lab[0] and sum(rate[-5:]) / 5 < sum(rate[:5]) / 5, task
        else:
            assert sum(loss[-5:]) / 5 < 0.9 * sum(loss[:5]) / 5, task
    assert set(result["tasks"]) == {"prediction", "detection", "precoding"}
    assert "val_nmse_db_ar" in result["prediction"] and "val_ser_lmmse" in result["detection"]
    assert result["backbone"]["fingerprint"].startswith("random-")
    assert (d / "adapter" / "adapter_model.safetensors").is_file()


def test_trainable_parameters_are_exactly_lora_and_heads_and_backbone_stays_frozen():
    torch.manual_seed(0)
    model = build_model("llm", DIMS, TINY)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n or n.startswith("heads.") for n in names)
    lora = [n for n in names if ".lora_" in n]
    assert len(lora) == 2 * 7 * 2                  # A and B, 7 projections, 2 layers
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert len(frozen) > 10
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inp = _inputs()
    y, h, _ = inp["detection"]
    x = torch.linalg.lstsq(h, y).solution
    for _ in range(3):
        loss = model.training_loss({"task": "detection", "y": y, "h": h, "noise_var": torch.full((3,), 0.01),
                                    "x": x})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("task", ["prediction", "detection", "precoding"])
def test_cached_prefix_equals_running_the_prompt_per_sample(task):
    torch.manual_seed(0)
    model = _randomise(build_model("llm", DIMS, TINY))
    inputs = _inputs()[task]

    def run(mode):
        model.prefix_mode = mode
        model.zero_grad()
        out = model.task_forward(task, *inputs)
        (out.abs().square().sum()).backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out_c, grad_c = run("cache")
    out_n, grad_n = run("concat")
    torch.testing.assert_close(out_c, out_n, rtol=1e-4, atol=1e-5)
    assert grad_c.keys() == grad_n.keys() and any(".lora_" in n for n in grad_c)
    for n in grad_c:       # float32 sums in another order: compare relative to the gradient's norm
        assert (grad_c[n] - grad_n[n]).norm() <= 1e-4 * grad_n[n].norm() + 1e-7, n
    model.eval()                                    # inference: the cache is computed once, reused
    with torch.no_grad():
        model.prefix_mode = "cache"
        a = model.task_forward(task, *inputs)
        assert len(model._prefix_cache) == 1
        b = model.task_forward(task, *inputs)
        model.prefix_mode = "concat"
        c = model.task_forward(task, *inputs)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_changing_the_task_identifier_changes_the_output(monkeypatch):
    torch.manual_seed(0)
    model = _randomise(build_model("llm", DIMS, TINY)).eval()
    inputs = _inputs()["detection"]
    with torch.no_grad():
        a = model.task_forward("detection", *inputs)
        ident, desc, instr = prompt_mod.template("detection")
        monkeypatch.setattr(chain_class("detection"), "prompt", ("[channel prediction]", desc, instr))
        model.train().eval()                         # drops the cached prefix
        model._prompt_ids.clear()
        b = model.task_forward("detection", *inputs)
    assert (a - b).abs().max() > 1e-4


def test_prompt_none_runs_without_prefix_and_differs():
    torch.manual_seed(0)
    with_text = _randomise(build_model("llm", DIMS, TINY)).eval()
    torch.manual_seed(0)
    without = _randomise(build_model("llm", DIMS, TINY | {"prompt": "none"})).eval()
    inputs = _inputs()["precoding"]
    with torch.no_grad():
        a, b = with_text.task_forward("precoding", *inputs), without.task_forward("precoding", *inputs)
    assert not without._prefix_cache and (a - b).abs().max() > 1e-6


def test_untrained_agent_is_the_classical_start():
    """Zero-initialised decoders: ar (or outdated CSI), unbiased LMMSE, equal-power RZF."""
    model = build_model("llm", DIMS, TINY).eval()
    inp = _inputs()
    with torch.no_grad():
        h = inp["prediction"][0]
        ar = linksim.blocks.get("ar", horizon=2)(h)        # the AR recursion, not the tap form
        torch.testing.assert_close(model.task_forward("prediction", h), ar, rtol=1e-4, atol=1e-5)
        plain = build_model("llm", DIMS, TINY | {"heads": {"prediction": {"base": "outdated"}}}).eval()
        assert torch.equal(plain.task_forward("prediction", h), h[:, -1:].expand(-1, 2, -1, -1, -1))
        y, hu, nv = inp["detection"]
        lmmse = linksim.blocks.get("lmmse")(y, hu, nv)
        torch.testing.assert_close(model.task_forward("detection", y, hu, nv), lmmse.to(torch.complex64),
                                   rtol=1e-3, atol=1e-4)
        h, p, s2 = inp["precoding"]
        from linksim.blocks.precoders import structured_beamformer
        ref = structured_beamformer(h, torch.full((3, 2), 0.5), torch.full((3, 2), 0.5), s2, p)
        torch.testing.assert_close(model.task_forward("precoding", h, p, s2), ref, rtol=1e-4, atol=1e-5)


def test_save_load_gives_identical_outputs(trained, tmp_path):
    d, _, sc = trained
    for kind in ("predictor", "detector", "precoder"):
        block = load_agent(str(d), kind, sc)
        again = load_agent(str(d), kind, sc)
        task = linksim.registry.task_of(kind)
        inputs = _inputs()[task]
        assert torch.equal(block(*inputs), again(*inputs))
    torch.manual_seed(0)
    model = _randomise(build_model("llm", DIMS, TINY)).eval()
    model.save_weights(tmp_path)
    torch.manual_seed(5)
    other = build_model("llm", DIMS, TINY).eval()
    other.load_weights(tmp_path)
    with torch.no_grad():
        for task, inputs in _inputs().items():
            assert torch.equal(model.task_forward(task, *inputs), other.task_forward(task, *inputs))
    assert sum(f.stat().st_size for f in model.weight_files(tmp_path)) < 20e6
    import json                       # the adapter names the backbone source, not a cache path
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"


def test_one_precoding_model_serves_every_k_in_range_and_refuses_others(trained):
    d, _, sc = trained
    for k in range(1, 5):
        block = load_agent(str(d), "precoder", sc.replace(precoding={"num_users": k}))
        w = block(*_inputs(k=k)["precoding"])
        assert w.shape == (3, 8, k) and torch.allclose(w.abs().square().sum((1, 2)).double(), torch.ones(3, dtype=torch.float64), atol=1e-5)
    with pytest.raises(LinksimError, match=r"num_users in 1\.\.4 \(scenario: 5\)"):
        load_agent(str(d), "precoder", sc.replace(precoding={"num_users": 5}))
    block = load_agent(str(d), "precoder", sc)
    with pytest.raises(LinksimError, match="trained for K = 1..4 users, got K = 6"):
        block(*_inputs(k=6)["precoding"])


def test_damaged_agents_are_one_line_errors(trained, tmp_path):
    import shutil
    d, _, sc = trained
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    (bad / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(LinksimError, match="no LoRA adapter"):
        load_agent(str(bad), "detector", sc)
    shutil.rmtree(bad)
    shutil.copytree(d, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LinksimError, match="weights cannot be loaded"):
        load_agent(str(bad), "detector", sc)
    shutil.rmtree(bad)
    shutil.copytree(d, bad)
    text = (bad / "agent.toml").read_text().replace('fingerprint = "random-', 'fingerprint = "other-')
    (bad / "agent.toml").write_text(text)
    with pytest.raises(LinksimError, match="the agent was trained on other-"):
        load_agent(str(bad), "predictor", sc)


def test_bad_model_options_are_one_line_errors():
    for hp, msg in [({"backbone": {"sauce": 1}}, "model.backbone.sauce"),
                    ({"backbone": {"source": "tiny", "quantization": "int3"}}, "quantization"),
                    (TINY | {"users": [0, 40]}, "model.users"),
                    (TINY | {"prompt": "yes"}, "model.prompt"),
                    (TINY | {"heads": {"prediction": {"depth": 3}}}, "model.heads")]:
        with pytest.raises(LinksimError, match=msg):
            build_model("llm", DIMS, hp)


@pytest.mark.parametrize("mode", ["nf4", "loftq"])
def test_four_bit_backbone_builds_and_trains(mode):
    torch.manual_seed(0)
    model = build_model("llm", DIMS, {**TINY, "lora": {"dropout": 0.0},
                                      "backbone": {"source": "tiny", "layers": 2, "quantization": mode}})
    rep = model.quant_report
    lora_layers = [v for v in rep.values() if v["rank"]]
    assert len(lora_layers) == 14
    if mode == "loftq":
        assert all(v["error"] < v["plain_error"] for v in lora_layers)
    y, h, nv = _inputs()["detection"]
    loss = _randomise(model).training_loss({"task": "detection", "y": y, "h": h, "noise_var": torch.full((3,), nv),
                                            "x": torch.linalg.lstsq(h, y).solution})
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if ".lora_" in n]
    assert len(grads) == 28 and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_shipped_llm_agent_runs_offline():
    """The shipped agent loads and serves all three tasks with HF_HUB_OFFLINE=1 (no network)."""
    if not (os.path.isfile("agents/llm-multitask/model.safetensors")):
        pytest.skip("agents/llm-multitask is not trained yet")
    code = """
import torch, linksim
sc = linksim.load_scenario("scenarios/quick.toml")
for kind in ("predictor", "detector", "precoder"):
    linksim.blocks.get("agent:agents/llm-multitask", kind=kind, scenario=sc)
h = linksim.ChannelSource(sc, seed=1).sample(2, num_users=4, num_time=1)[:, 0, :, :, 0]
w = linksim.blocks.get("agent:agents/llm-multitask", kind="precoder", scenario=sc)(h, 1.0, 0.1)
print(tuple(w.shape))
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(2, 16, 4)")


def test_multitask_resume_after_kill_equals_uninterrupted(tmp_path, monkeypatch):
    """Killed mid-run (LoRA dropout on, so the RNG state matters), resumed: the same weights and log."""
    from safetensors.torch import load_file

    from linksim.training.trainer import _LossModule

    (tmp_path / "tiny.toml").write_text(SCENARIO)
    dirs = []
    for name in ("full", "killed"):
        d = tmp_path / name
        d.mkdir()
        text = AGENT.format(scenario=tmp_path / "tiny.toml").replace("dropout = 0.0", "dropout = 0.1")
        (d / "agent.toml").write_text(text.replace("steps = 40", "steps = 8").replace("label_steps = 20", "label_steps = 4")
                                      .replace("val_every = 20", "val_every = 4").replace("checkpoint_every = 20",
                                                                                          "checkpoint_every = 4"))
        dirs.append(d)
    train_agent(dirs[0], progress=False)
    original, calls = _LossModule.forward, {"n": 0}

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] == 3 * 6 + 2:             # step 7 of 8, second task
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(_LossModule, "forward", dies)
    with pytest.raises(KeyboardInterrupt):
        train_agent(dirs[1], progress=False)
    # the checkpoint holds what training changes (LoRA, heads), not the frozen backbone
    stored = load_file(str(dirs[1] / "checkpoint" / "model.safetensors"))
    llm = [k for k in stored if k.startswith("model.llm.")]
    assert llm and all("lora_" in k for k in llm), [k for k in llm if "lora_" not in k][:3]
    monkeypatch.setattr(_LossModule, "forward", original)
    train_agent(dirs[1], progress=False)
    for f in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(str(dirs[0] / f)), load_file(str(dirs[1] / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    log = [list(csv.DictReader(open(d / "train_log.csv"))) for d in dirs]
    assert [r["loss"] for r in log[0]] == [r["loss"] for r in log[1]]


def test_each_task_prompt_states_the_agent_sizes():
    from linksim.llm.prompt import instruction_for

    model = build_model("llm", DIMS, TINY).eval()
    with torch.no_grad():
        for task, inputs in _inputs(k=3).items():
            model.task_forward(task, *inputs)
    ids = {key: ids.tolist() for key, ids in model._prompt_ids.items()}
    assert ids == {(t, k): model.llm.tokenize(instruction_for(t, DIMS, num_users=k)).tolist()
                   for t, k in [("prediction", None), ("detection", None), ("precoding", 3)]}
    assert "2 single-antenna users" in instruction_for("detection", DIMS)
