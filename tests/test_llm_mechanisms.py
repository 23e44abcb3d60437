"""The LLM agent's optional mechanisms (AI2MMUM / MMSense) on the tiny backbone: learned prefix
prompts, task-specific attention over tapped layers, and their one-line errors. The uncertainty
weighting of the multi-task loss is tested in tests/test_loss_weights.py."""
import pytest
import torch
from safetensors.torch import load_file

from linksim.agents import build_model
from linksim.errors import LinksimError

from test_llm_agent import DIMS, TINY, _inputs, _randomise

TASKS = ("prediction", "detection", "precoding")


def _pair(hp, seed=0):
    """A randomised default agent and one with the options ``hp`` holding the same weights."""
    torch.manual_seed(seed)
    base = _randomise(build_model("llm", DIMS, TINY))
    other = build_model("llm", DIMS, TINY | hp)
    missing, unexpected = other.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(n.startswith(("soft_prompt.", "layer_taps.")) for n in missing)
    return base, other


# ------------------------------------------------------------------------------ learned prefix
@pytest.mark.parametrize("mode", ["learned", "text+learned"])
def test_learned_prefix_changes_the_output_and_gets_gradients(mode):
    base, model = _pair({"prompt": mode, "prompt_tokens": 3})
    assert model.soft_prompt.prefix["detection"].shape == (3, model.llm.width)
    inputs = _inputs()["detection"]
    with torch.no_grad():
        a = base.eval().task_forward("detection", *inputs)
        b = model.eval().task_forward("detection", *inputs)
        model.soft_prompt.prefix["detection"].add_(0.5)
        model.train().eval()                                  # drops the cached prefix
        c = model.task_forward("detection", *inputs)
    assert (a - b).abs().max() > 1e-5 and (b - c).abs().max() > 1e-5
    model.train()
    y, h, nv = inputs
    loss = model.training_loss({"task": "detection", "y": y, "h": h, "noise_var": torch.full((3,), nv),
                                "x": torch.linalg.lstsq(h, y).solution})
    loss.backward()
    grads = {t: p.grad for t, p in model.soft_prompt.prefix.items()}
    assert grads["detection"] is not None and grads["detection"].abs().sum() > 0
    assert grads["prediction"] is None and grads["precoding"] is None       # one task's prefix only


def test_learned_prefix_starts_from_the_task_identifier_embedding():
    _, model = _pair({"prompt": "learned", "prompt_tokens": 5})
    from linksim.llm.prompt import template
    ids = model.llm.tokenize(template("prediction")[0])
    emb = model.llm.embed(ids)
    q = model.soft_prompt.prefix["prediction"]
    assert torch.equal(q, emb[torch.arange(5) % emb.shape[0]])
    assert not torch.equal(q, model.soft_prompt.prefix["detection"])


@pytest.mark.parametrize("hp", [{"prompt": "text+learned", "prompt_tokens": 2},
                                {"layers_tapped": [1, 2]},
                                {"prompt": "learned", "layers_tapped": [1]}])
@pytest.mark.parametrize("task", TASKS)
def test_cached_prefix_equals_per_sample_prompt_with_options(hp, task):
    _, model = _pair(hp)
    with torch.no_grad():                      # logits away from uniform: the taps' weights matter
        for p in (model.layer_taps.logits.values() if model.layer_taps else ()):
            p.copy_(torch.linspace(-1, 1, p.numel()))
    inputs = _inputs()[task]
    out = {}
    for mode in ("cache", "concat"):
        model.prefix_mode = mode
        out[mode] = model.task_forward(task, *inputs).detach()
    torch.testing.assert_close(out["cache"], out["concat"], rtol=1e-4, atol=1e-5)
    model.eval()
    model.prefix_mode = "cache"
    with torch.no_grad():
        a = model.task_forward(task, *inputs)
        assert len(model._prefix_cache) == 1
        assert torch.equal(a, model.task_forward(task, *inputs))


def test_learned_prefix_and_layer_weights_are_saved_and_loaded(tmp_path):
    hp = {"prompt": "text+learned", "prompt_tokens": 4, "layers_tapped": [1, 2]}
    _, model = _pair(hp)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("soft_prompt.", "layer_taps.")):
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    model.eval().save_weights(tmp_path)
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert {f"soft_prompt.prefix.{t}" for t in TASKS} | {f"layer_taps.logits.{t}" for t in TASKS} <= keys
    torch.manual_seed(9)
    other = build_model("llm", DIMS, TINY | hp).eval()
    other.load_weights(tmp_path)
    with torch.no_grad():
        for task, inputs in _inputs().items():
            assert torch.equal(model.task_forward(task, *inputs), other.task_forward(task, *inputs))
    plain = build_model("llm", DIMS, TINY)            # an agent without the options refuses them
    with pytest.raises(ValueError, match="heads do not match"):
        plain.load_weights(tmp_path)


def test_default_options_add_nothing_to_the_agent():
    torch.manual_seed(0)
    a = build_model("llm", DIMS, TINY)
    torch.manual_seed(0)
    b = build_model("llm", DIMS, TINY | {"prompt": "text", "prompt_tokens": 8, "layers_tapped": []})
    assert a.soft_prompt is None and a.layer_taps is None and b.soft_prompt is None and b.layer_taps is None
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(k.startswith("heads.") for k in a.head_state())
    _randomise(a)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for task, inp in _inputs().items():
            assert torch.equal(a.eval().task_forward(task, *inp), b.eval().task_forward(task, *inp))


# ------------------------------------------------------------------------------ tapped layers
@pytest.mark.parametrize("prompt", ["text", "none"])
@pytest.mark.parametrize("taps, logits", [([2], [0.0]), ([1, 2], [-1e4, 0.0])])
def test_taps_concentrated_on_the_last_layer_equal_the_plain_agent(prompt, taps, logits):
    base, model = _pair({"prompt": prompt, "layers_tapped": taps})
    base.prompt_mode = prompt
    with torch.no_grad():
        for p in model.layer_taps.logits.values():
            p.copy_(torch.tensor(logits))
    base.eval(), model.eval()
    with torch.no_grad():
        for task, inputs in _inputs().items():
            assert torch.equal(base.task_forward(task, *inputs), model.task_forward(task, *inputs)), task


def test_tapped_layer_weights_get_gradients_and_change_the_output():
    base, model = _pair({"layers_tapped": [1, 2]})
    w = model.layer_taps.weights("precoding")
    assert torch.allclose(w, torch.full((2,), 0.5))
    inputs = _inputs()["precoding"]
    out = model.task_forward("precoding", *inputs)
    out.abs().square().sum().backward()
    g = model.layer_taps.logits["precoding"].grad
    assert g is not None and g.abs().sum() > 0
    assert model.layer_taps.logits["detection"].grad is None
    with torch.no_grad():
        assert (out - base.task_forward("precoding", *inputs)).abs().max() > 1e-6


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("hp, msg", [
    ({"prompt": "soft"}, r"model\.prompt must be one of text, none, learned, text\+learned"),
    ({"prompt": "learned", "prompt_tokens": 0}, r"model\.prompt_tokens must be an integer >= 1"),
    ({"prompt_tokens": "8"}, r"model\.prompt_tokens"),
    ({"layers_tapped": [3]}, r"model\.layers_tapped must be in 1\.\.2"),
    ({"layers_tapped": [0, 2]}, r"model\.layers_tapped must be in 1\.\.2"),
    ({"layers_tapped": [2, 2]}, r"model\.layers_tapped must be a list of distinct"),
    ({"layers_tapped": 2}, r"model\.layers_tapped must be a list"),
    ({"layers_tapped": [1], "backbone": {"source": "none"}}, r"model\.layers_tapped needs a backbone"),
])
def test_bad_mechanism_options_are_one_line_errors_before_loading(hp, msg, monkeypatch):
    from linksim.agents.models.llm import model as model_mod

    def never(*a):
        raise AssertionError("the backbone was loaded before the options were checked")
    monkeypatch.setattr(model_mod, "_load_backbone", never)
    with pytest.raises(LinksimError, match=msg) as e:
        build_model("llm", DIMS, TINY | hp)
    assert "\n" not in str(e.value)
