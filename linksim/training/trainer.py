"""One training harness for every trained block: ``linksim train AGENT_DIR``.

Hugging Face Accelerate runs the loop (CPU here; ``accelerate launch -m linksim.cli train DIR``
spreads it over GPUs, each process drawing its own batches). Adam with a cosine schedule,
gradient clipping, per-step metrics in ``train_log.csv``, validation on a pool of another seed,
checkpoints (``checkpoint/``) to resume from, final weights in ``model.safetensors`` and the
measured metrics in ``agent.toml [result]``.
"""
from __future__ import annotations

import csv
import json
import platform
import time
from importlib import metadata
from pathlib import Path

import torch

from ..agents import AgentBlock, agent_tasks
from ..agents.base import Dims, build_model
from ..agents.spec import read_agent, write_result
from ..blocks import get as get_block
from ..config import derive_seed
from ..errors import LinksimError
from ..chains import CHAINS
from ..registry import TASK_KIND
from ..scenario import load_scenario
from .data import TaskData, channel_pool, dataset_pool

LOG_COLUMNS = ("step", "stage", "loss", "lr", "metric", "value")


class _LossModule(torch.nn.Module):
    """Routes ``training_loss`` through ``forward`` so DDP (multi-GPU) syncs gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.training_loss(batch)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


REFERENCE = {"detection": "lmmse", "precoding": "wmmse", "prediction": "outdated"}


@torch.no_grad()
def task_metrics(block, task: str, batches: list[dict]) -> dict:
    """Validation metrics ``{"val_<metric>": value}`` of any block of ``task`` (trained or
    classical) on chain-layout batches, counted by the chain's own ``measure`` (one metric path:
    the same batches in a sweep give the same numbers)."""
    chain = CHAINS[task]
    acc = chain.new_metrics()
    for b in batches:
        chain.measure(block, b, acc)
    return {f"val_{m}": a.result()[0] for m, a in acc.items()}


def reference_metrics(task: str, batches: list[dict], sc) -> dict:
    """The classical reference's metrics on the validation batches (computed once per run)."""
    name = REFERENCE[task]
    block = get_block(name, kind=TASK_KIND[task], scenario=sc)
    return {f"{k}_{name}": v for k, v in task_metrics(block, task, batches).items()}


def validate(model, task: str, batches: list[dict], reference: dict) -> dict:
    """The model's validation metrics with the classical reference beside them."""
    out = task_metrics(AgentBlock(model, task, "validation"), task, batches) | reference
    model.train()
    if task == "precoding":
        out["val_rate_ratio"] = out["val_sum_rate"] / out["val_sum_rate_wmmse"]
    return {k: round(float(v), 6) for k, v in out.items()}


def train_agent(path: str | Path, steps: int | None = None, resume: bool = True,
                progress: bool = True) -> dict:
    """Train the agent in ``path`` per its agent.toml; returns the ``[result]`` table written."""
    from accelerate import Accelerator
    from safetensors.torch import save_model
    from tqdm.auto import tqdm

    spec = read_agent(path)
    sc = load_scenario(spec.scenario_path())
    tasks = agent_tasks(spec)
    if len(tasks) != 1:
        raise LinksimError(f"{spec.path / 'agent.toml'}: training several tasks at once is not "
                           f"supported yet (agent.tasks = {list(tasks)})")
    task = tasks[0]
    dims = Dims.from_scenario(sc, task)
    tr = spec.train
    if steps is not None and steps <= 0:
        raise LinksimError(f"--steps must be > 0, got {steps}")
    total = steps or tr.steps

    acc = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(derive_seed(spec.seed, "init"))
    model = build_model(spec.arch, dims, spec.model)
    opt = torch.optim.Adam(model.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=tr.lr_min)
    wrapped, opt, sched = acc.prepare(_LossModule(model), opt, sched)

    cache = spec.path.parent / ".cache"   # shared by the agents of one folder (pools are keyed by content)
    show = progress and acc.is_local_main_process
    pool = (dataset_pool(tr.dataset, sc, task) if tr.dataset else
            channel_pool(sc, task, tr.pool_drops, derive_seed(spec.seed, "train"), tr.speed_kmh, cache, show))
    train_data = TaskData(task, pool, dims, sc, tr, spec.seed)
    val_data = TaskData(task, channel_pool(sc, task, tr.val_drops, derive_seed(spec.seed, "val"),
                                           tr.speed_kmh, cache, show), dims, sc, tr, spec.seed + 1)
    val = [_to(b, acc.device) for b in val_data.val_batches(tr.batch_size, spec.seed)]
    reference = reference_metrics(task, val, sc.replace(run={"device": str(acc.device)}))

    ckpt, state_file, log_file = spec.path / "checkpoint", spec.path / "checkpoint" / "step.json", \
        spec.path / "train_log.csv"
    start, wall_before = 0, 0.0
    if resume and state_file.is_file():
        acc.load_state(str(ckpt))
        st = json.loads(state_file.read_text())
        start, wall_before = st["step"], st["wall_time_s"]
    elif log_file.exists():
        log_file.unlink()
    t0 = time.time()
    log_rows = []
    bar = tqdm(total=total, initial=start, desc=f"train {spec.path.name}", unit="step", disable=not show)
    metrics = {}
    for step in range(start, total):
        stage = "labels" if step < tr.label_steps else "rate"
        batch = _to(train_data.batch(tr.batch_size, derive_seed(spec.seed, "step", step, acc.process_index),
                                     stage), acc.device)
        loss = wrapped(batch)
        lv = loss.detach().item()
        if not torch.isfinite(loss):
            raise LinksimError(f"{spec.path}: loss is {lv} at step {step} (try a lower train.lr)")
        opt.zero_grad()
        acc.backward(loss)
        if tr.grad_clip > 0:
            acc.clip_grad_norm_(wrapped.parameters(), tr.grad_clip)
        opt.step()
        sched.step()
        log_rows.append((step + 1, stage, f"{lv:.6g}", f"{sched.get_last_lr()[0]:.3g}", "", ""))
        bar.update(1)
        bar.set_postfix(loss=f"{lv:.4g}")
        done = step + 1
        if done % tr.val_every == 0 or done == total:
            metrics = validate(acc.unwrap_model(wrapped).model, task, val, reference)
            log_rows += [(done, stage, "", "", k, v) for k, v in metrics.items()]
            bar.set_postfix(loss=f"{lv:.4g}", **{k[4:]: v for k, v in list(metrics.items())[:1]})
        if done % tr.checkpoint_every == 0 or done == total:
            if acc.is_main_process:
                _append_log(log_file, log_rows)
            log_rows = []
            acc.save_state(str(ckpt))          # every process: Accelerate writes from the main one
            if acc.is_main_process:
                state_file.write_text(json.dumps({"step": done, "wall_time_s": wall_before + time.time() - t0}))
    bar.close()
    acc.wait_for_everyone()
    net = acc.unwrap_model(wrapped).model
    if not metrics:
        metrics = validate(net, task, val, reference)
    result = {
        "task": task, "steps": total, "wall_time_s": round(wall_before + time.time() - t0, 1),
        "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
        "scenario_hash": sc.hash, "dims": dims.as_dict(), **metrics,
        "trained_on": time.strftime("%Y-%m-%d"), "device": str(acc.device),
        "versions": {k: _version(k) for k in ("linksim", "torch", "accelerate", "sionna-no-rt")}
        | {"python": platform.python_version()},
    }
    if acc.is_main_process:
        save_model(net, str(spec.weights))
        write_result(spec, result)
    return result


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "unknown"


def _append_log(path: Path, rows: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(LOG_COLUMNS)
        w.writerows(rows)
