"""Generic protocol tests, parametrised over the registries: every registered block of every kind and
every agent architecture gets them for free (no hard-coded lists)."""
from __future__ import annotations

import pytest
import torch

import linksim
from linksim.agents import AgentBlock, Dims, build_model
from linksim.agents.spec import TrainSpec
from linksim.blocks.precoders import sum_rate
from linksim.chains import chain_class
from linksim.chains.sensing import SensingChain, call as sensing_call, observation
from linksim.channel.modalities import MODALITIES
from linksim.registry import ARCHS, BLOCKS, REFERENCE, TASKS, kind_of, task_of
from linksim.training.data import TaskData

from conftest import tiny

SC = tiny()
B = 6


def _inputs(kind: str, cdtype=torch.complex64, seed: int = 0):
    """Seeded inputs of a block kind on the tiny scenario (M = 8 antennas, K = 2 users)."""
    g = torch.Generator().manual_seed(seed)
    m, k, f = SC.channel.num_bs_antennas, SC.detection.num_users, SC.channel.num_subcarriers
    rdt = torch.float64 if cdtype == torch.complex128 else torch.float32

    def cn(*shape):
        return torch.complex(torch.randn(shape, generator=g, dtype=rdt), torch.randn(shape, generator=g, dtype=rdt)) / 2 ** 0.5

    if kind == "precoder":
        return (cn(B, k, m), 2.0, 0.1)
    if kind == "detector":
        return (cn(B, m, 3), cn(B, m, k), 0.1)
    L, P = SC.prediction.history, SC.prediction.horizon
    h = cn(B, 1, k, m, f) * torch.exp(1j * 0.05 * torch.arange(L + P, dtype=rdt))[None, :, None, None, None]
    return (h[:, :L], h[:, L:])


def _check_output(kind: str, out, inputs, cdtype):
    assert out.dtype == cdtype and out.device == torch.device(SC.run.device)
    assert torch.isfinite(torch.view_as_real(out)).all()
    if kind == "precoder":
        h, p_tx, _ = inputs
        assert out.shape == (B, h.shape[2], h.shape[1])
        power = out.abs().square().sum((1, 2))
        assert (power <= p_tx * (1 + 1e-5)).all(), power
    elif kind == "detector":
        y, h, _ = inputs
        assert out.shape == (B, h.shape[2], y.shape[2])
    else:
        hist, fut = inputs
        assert out.shape == fut.shape


def _call(block, kind, inputs):
    """A predictor sees only the history; a reference predictor also gets the true future."""
    if kind == "predictor" and block.kind != REFERENCE:
        return block(inputs[0])
    return block(*inputs)


#: block kinds whose task builds dict-of-modalities batches (the sensing tasks): their blocks are
#: called on a batch of the task's own chain
SENSING = {t.kind for t in TASKS.values() if issubclass(t.cls, SensingChain)}


def _sensing_batch(kind: str, cast=None) -> dict:
    """The first batch (B drops) of the task of ``kind`` on the tiny scenario; ``cast``: its
    tensors to double precision."""
    task = task_of(kind)
    sc = SC.replace(**{task: {"num_samples": B}})
    chain = chain_class(task)(sc)
    batch = next(iter(chain.batches(chain.point())))
    if cast:
        batch = {k: (v.to(torch.complex128) if v.is_complex() else v.double() if v.is_floating_point() else v)
                 if torch.is_tensor(v) else v for k, v in batch.items()}
    return batch


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize("precision", ["single", "double"])
def test_every_block_follows_its_protocol(name, precision):
    spec = BLOCKS[name]
    sc = SC.replace(run={"precision": precision})
    block = linksim.blocks.get(name, kind=spec.serves, scenario=sc)
    assert block.kind == spec.kind and block.serves == spec.serves and spec.doc
    if spec.serves in SENSING:
        batch = _sensing_batch(spec.serves, cast=precision == "double")
        out = sensing_call(block, batch)
        assert out.dtype == block.dtype and out.device == torch.device(SC.run.device)
        assert out.shape[:2] == batch["truth"].shape[:2] and torch.isfinite(out).all()
        if spec.kind == REFERENCE:
            assert torch.equal(out, batch["truth"])
        return
    cdtype = torch.complex128 if precision == "double" else torch.complex64
    inputs = _inputs(spec.serves, cdtype)
    out = _call(block, spec.serves, inputs)
    if spec.kind == REFERENCE and spec.serves == "precoder":
        # a limit curve: its rate bounds every registered precoder's on the same channels
        h, p_tx, nv = inputs
        assert out.shape == (B,) and out.dtype == torch.float64
        for other in linksim.blocks.names("precoder"):
            w = linksim.blocks.get(other, kind="precoder", scenario=sc)(h, p_tx, nv)
            assert (sum_rate(h, w, nv) <= out * (1 + 1e-6)).all(), other
        return
    if spec.kind == REFERENCE:
        assert torch.equal(out, inputs[1])
        return
    _check_output(spec.serves, out, inputs, cdtype)


@pytest.mark.parametrize("name", sorted(n for n, s in BLOCKS.items() if s.kind != REFERENCE))
def test_double_precision_agrees_with_single(name):
    kind = BLOCKS[name].kind
    lo = linksim.blocks.get(name, kind=kind, scenario=SC)
    hi = linksim.blocks.get(name, kind=kind, scenario=SC.replace(run={"precision": "double"}))
    if kind in SENSING:
        a, b = sensing_call(lo, _sensing_batch(kind)), sensing_call(hi, _sensing_batch(kind, cast=True))
        torch.testing.assert_close(a.double(), b, rtol=2e-4, atol=2e-4)
        return
    x_lo = _inputs(kind, torch.complex64, seed=3)
    x_hi = tuple(v.to(torch.complex128) if torch.is_tensor(v) else v for v in x_lo)
    a, b = _call(lo, kind, x_lo), _call(hi, kind, x_hi)
    torch.testing.assert_close(a.to(torch.complex128), b, rtol=2e-4, atol=2e-4)


def _tiny_dims(task):
    return Dims.from_scenario(SC, task)


ARCH_TASKS = [(a, t) for a in sorted(ARCHS) for t in ARCHS[a].tasks]
#: every modality in every sensing table, so a model reads whichever it is built for
ALL_MODALITIES = ",".join(MODALITIES)


def _arch_scenario(task):
    return SC.replace(**{task: {"modalities": ALL_MODALITIES}}) if kind_of(task) in SENSING else SC


def _pool(task):
    src = linksim.ChannelSource(SC.replace(channel={"model": "rayleigh"}), seed=5)
    cls = chain_class(task)
    t = cls.num_time(SC) if issubclass(cls, SensingChain) else \
        SC.prediction.history + SC.prediction.horizon if task == "prediction" else 1
    return src.sample(4, num_users=_tiny_dims(task).num_users, num_time=t, speed_kmh=60.0)


def _arch_inputs(task):
    """Block inputs of ``task`` (a sensing task: the observation of its first batch)."""
    kind = kind_of(task)
    if kind in SENSING:
        sc = _arch_scenario(task).replace(**{task: {"num_samples": B}})
        chain = chain_class(task)(sc)
        batch = next(iter(chain.batches(chain.point())))
        return (observation(batch),), batch["truth"]
    return _inputs(kind), None


@pytest.mark.parametrize("arch, task", ARCH_TASKS)
def test_every_arch_saves_loads_and_serves_its_protocol(arch, task, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, _tiny_dims(task), ARCHS[arch].tiny, tasks=(task,))
    assert task in model.tasks and model.arch == arch
    model.save_weights(tmp_path)
    torch.manual_seed(1)
    again = build_model(arch, _tiny_dims(task), ARCHS[arch].tiny, tasks=(task,))
    again.load_weights(tmp_path)
    kind = kind_of(task)
    inputs, truth = _arch_inputs(task)
    a, b = AgentBlock(model, task, arch), AgentBlock(again, task, arch)
    out = _call(a, kind, inputs)
    assert torch.equal(out, _call(b, kind, inputs))
    if truth is not None:
        assert out.shape[:2] == truth.shape[:2] and out.dtype == torch.float32 and torch.isfinite(out).all()
        return
    _check_output(kind, out, inputs, torch.complex64)


@pytest.mark.parametrize("arch, task", ARCH_TASKS)
def test_every_arch_training_loss_falls(arch, task):
    """Fitting one fixed batch: the loss must fall (any trainable model can do this)."""
    torch.manual_seed(0)
    dims = _tiny_dims(task)
    model = build_model(arch, dims, ARCHS[arch].tiny, tasks=(task,))
    data = TaskData(task, _pool(task), dims, _arch_scenario(task), TrainSpec(), seed=0,
                    layout=model.layouts.get(task, ""))
    batch = data.batch(32, seed=1, stage="labels") | {"task": task}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(40):
        loss = model.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05 * abs(losses[0]), (arch, losses[0], losses[-1])
