"""Device-clean chains and one metric path.

A machine without a GPU cannot run ``device = "cuda"``, so the chains are run with the scenario on
the CPU while PyTorch's *default* device is ``meta``: any tensor or generator a chain or block
creates without naming the scenario's device lands on ``meta``, where it holds no values, and the
run fails (mixing devices) or its metrics are not numbers. The same runs must give exactly the
numbers of a plain run.
"""
from __future__ import annotations

import math

import pytest
import torch

import linksim
from linksim.agents import AgentBlock, build_model
from linksim.chains import LoopBlock, chain_class
from linksim.channel.modalities import MODALITIES
from linksim.registry import ARCHS, BLOCKS, TASKS, trainable_tasks
from linksim.training.data import TaskData
from linksim.training.trainer import task_metrics

from conftest import tiny

SC = tiny(detection={"max_samples": 8, "min_samples": 8}, prediction={"num_samples": 8},
          precoding={"num_samples": 8}, **{t: {"num_samples": 8, "modalities": ",".join(MODALITIES)}
             for t in ("los", "beam", "pathloss", "position")})


def _blocks(task, sc):
    """Every registered block usable in ``task`` plus an untrained model of every arch serving it."""
    kind = TASKS[task].kind
    if task == "loop":
        return {"ar+wmmse": LoopBlock(linksim.blocks.get("ar", "predictor", sc),
                                      linksim.blocks.get("wmmse", "precoder", sc)),
                "genie+dpc_bound": LoopBlock(linksim.blocks.get("genie", "predictor", sc),
                                             linksim.blocks.get("dpc_bound", "precoder", sc))}
    out = {n: linksim.blocks.get(n, kind, sc) for n, s in BLOCKS.items() if s.serves == kind}
    torch.manual_seed(0)
    for arch, spec in ARCHS.items():
        if task in spec.tasks:
            dims = linksim.agents.Dims.from_scenario(sc, task)
            out[f"agent-{arch}"] = AgentBlock(build_model(arch, dims, spec.tiny, tasks=(task,)), task, arch)
    return out


def _run(chain, blocks, default_device=None):
    """Run the chain's default point with ``default_device`` as PyTorch's default device (the
    blocks are built before, as a sweep builds them before its points)."""
    torch.set_default_device(default_device)
    try:
        acc = chain.run_point(blocks, chain.point())
    finally:
        torch.set_default_device(None)
    return {(lb, m): a.result()[0] for lb, ms in acc.items() for m, a in ms.items()}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_chain_creates_every_tensor_on_the_scenario_device(task):
    blocks = _blocks(task, SC)
    plain = _run(chain_class(task)(SC), blocks)
    strict = _run(chain_class(task)(SC), blocks, "meta")
    assert strict == plain
    assert all(math.isfinite(v) or v == float("-inf") for v in plain.values())


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu runs it)")


@CUDA
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_chain_runs_on_cuda(task):
    """Every block (and an untrained model of every arch) of every task at the default point with
    ``run.device = "cuda"``: the metrics of a CPU run, all finite. (The GPU's random streams are
    not the CPU's, so the drops and their numbers differ; the blocks are compared below.)"""
    gpu_sc = SC.replace(run={"device": "cuda"})
    gpu = _run(chain_class(task)(gpu_sc), _blocks(task, gpu_sc))
    cpu = _run(chain_class(task)(SC), _blocks(task, SC))
    assert gpu.keys() == cpu.keys()
    assert all(math.isfinite(v) or v == float("-inf") for v in gpu.values())


DETERMINISTIC = {"detector": ("lmmse", "zf_det", "mf", "kbest"), "precoder": ("zf", "rzf", "mrt", "wmmse"),
                 "predictor": ("outdated", "ar", "pad")}


def _inputs(kind, g):
    def c(*shape):
        return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                             torch.randn(*shape, generator=g, dtype=torch.float64))
    m, k = SC.channel.num_bs_antennas, SC.detection.num_users
    if kind == "detector":
        return c(4, m, 6), c(4, m, k), torch.full((4,), 0.1, dtype=torch.float64)
    if kind == "precoder":
        return c(4, k, m), torch.ones(4, dtype=torch.float64), torch.full((4,), 0.1, dtype=torch.float64)
    cp = SC.prediction
    return (c(2, cp.history, cp.num_users, m, SC.channel.num_subcarriers),)


@CUDA
@pytest.mark.parametrize("kind,name", [(k, n) for k, ns in DETERMINISTIC.items() for n in ns])
def test_cuda_blocks_give_the_cpu_outputs(kind, name):
    """A deterministic block fed the same inputs (double precision) on both devices: the same output
    up to the kernels' rounding."""
    sc = SC.replace(run={"precision": "double"})
    args = _inputs(kind, torch.Generator().manual_seed(3))
    cpu = linksim.blocks.get(name, kind, sc)(*args)
    gpu = linksim.blocks.get(name, kind, sc.replace(run={"device": "cuda"}))(*(a.cuda() for a in args))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-8)


def test_unknown_or_unavailable_device_is_one_line_error():
    with pytest.raises(linksim.LinksimError, match="device"):
        chain_class("precoding")(SC.replace(run={"device": "tpu"}))
    if not torch.cuda.is_available():
        with pytest.raises(linksim.LinksimError, match="CUDA is not available"):
            chain_class("precoding")(SC.replace(run={"device": "cuda"}))


@pytest.mark.parametrize("task", trainable_tasks())
def test_validation_and_sweep_count_the_same_on_the_same_drops(task):
    """Training validation and a sweep share the chain's metric code: a sweep point's batches fed
    to the trainer's validation give the sweep's numbers."""
    chain = chain_class(task)(SC)
    point = chain.point()
    name = {"detection": "lmmse", "precoding": "wmmse", "prediction": "ar"}.get(task, chain.references[0])
    block = linksim.blocks.get(name, TASKS[task].kind, SC)
    sweep = {f"val_{m}": a.result()[0] for m, a in chain.run_point({name: block}, point)[name].items()}
    assert task_metrics(block, task, list(chain.batches(point))) == sweep


@pytest.mark.parametrize("task", trainable_tasks())
def test_validation_batches_are_chain_batches(task):
    """The trainer's validation batches carry exactly the keys the chain's measure reads."""
    chain = chain_class(task)(SC)
    sweep_keys = set(next(iter(chain.batches(chain.point()))))
    dims = linksim.agents.Dims.from_scenario(SC, task)
    t = chain.num_time(SC)
    pool = linksim.ChannelSource(SC).sample(4, num_users=dims.num_users, num_time=t)
    from linksim.agents.spec import TrainSpec
    val = TaskData(task, pool, dims, SC, TrainSpec(), 0).val_batches(16, seed=0)
    assert val and all(sweep_keys - {"subcarriers"} <= set(b) for b in val)
