"""One training harness for every trained block: ``linksim train AGENT_DIR``.

Hugging Face Accelerate runs the loop (CPU here; ``accelerate launch -m linksim.cli train DIR``
spreads it over GPUs, each process drawing its own batches). Adam with a cosine schedule,
gradient clipping, per-step metrics in ``train_log.csv``, validation on a pool of another seed,
checkpoints (``checkpoint/``) to resume from, final weights in ``model.safetensors`` and the
measured metrics in ``agent.toml [result]``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import time
from pathlib import Path

import torch

from ..agents import AgentBlock, agent_tasks
from ..agents.base import Dims, build_model
from ..agents.spec import WEIGHTS, read_agent, write_result
from ..blocks import get as get_block
from ..chains import chain_class
from ..channel import ChannelSource
from ..channel.pool import channel_pool, dataset_pool
from ..config import derive_seed
from ..errors import LinksimError
from ..registry import arch_spec, kind_of
from ..results import versions
from ..scenario import load_scenario
from .data import FreshData, StepBatches, TaskData, drops_per_batch, step_loader
from .guard import check_overwrite
from .stopping import Plateau
from .weights import UNCERTAINTY, UncertaintyWeights

LOG_COLUMNS = ("step", "task", "stage", "loss", "lr", "metric", "value")


class _LossModule(torch.nn.Module):
    """Routes ``training_loss`` through ``forward`` so DDP (multi-GPU) syncs gradients: returns
    ``(loss, objective)``, the objective the task's uncertainty-weighted loss
    (:mod:`~linksim.training.weights`, their log-variances held here: checkpointed, synced) or
    None with fixed weights."""

    def __init__(self, model, weights: UncertaintyWeights | None = None):
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(self, batch):
        loss = self.model.training_loss(batch)
        return loss, (None if self.weights is None else self.weights(batch["task"], loss))


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def task_metrics(block, task: str, batches: list[dict], ci: bool = False) -> dict:
    """Validation metrics ``{"val_<metric>": value}`` of any block of ``task`` (trained or
    classical) on chain-layout batches, counted by the chain's own ``measure`` (one metric path:
    the same batches in a sweep give the same numbers). ``ci``: also ``val_<metric>_ci95``, the
    half width of the 95% interval of the task's validation metric (is the set large enough?)."""
    chain = chain_class(task)
    acc = chain.new_metrics(block)
    for b in batches:
        chain.measure(block, b, acc)
    out = {f"val_{m}": a.result()[0] for m, a in acc.items()}
    if ci and chain.val_metric in acc:
        _, lo, hi, _ = acc[chain.val_metric].result()
        out[f"val_{chain.val_metric}_ci95"] = (hi - lo) / 2
    return out


def reference_metrics(task: str, batches: list[dict], sc) -> dict:
    """The metrics of the task's classical references (its ``references``) on the validation
    batches (computed once per run)."""
    out = {}
    for name in chain_class(task).references:
        block = get_block(name, kind=kind_of(task), scenario=sc)
        out |= {f"{k}_{name}": v for k, v in task_metrics(block, task, batches).items()}
    return out


def validate(model, task: str, batches: list[dict], reference: dict) -> dict:
    """The model's validation metrics with the classical reference beside them."""
    model.diagnostics(task)                 # drop what earlier calls accumulated
    out = task_metrics(AgentBlock(model, task, "validation"), task, batches, ci=True) | reference
    out |= {f"val_{k}": v for k, v in model.diagnostics(task).items()}
    model.train()
    out |= chain_class(task).summary(out)
    return {k: round(float(v), 6) for k, v in out.items()}


class _TaskRun:
    """One task of a training run: its data (fresh drops, a pool or a dataset), validation batches,
    reference metrics and loss weight."""

    def __init__(self, task, spec, sc, dims, model, acc, cache, show):
        tr = spec.train
        chain = chain_class(task)
        self.task, self.batch_size = task, tr.batch_sizes.get(task, tr.batch_size)
        # the fixed weight (with "uncertainty": the start of the learned one)
        fixed = {} if tr.loss_weights == UNCERTAINTY else tr.loss_weights
        self.weight = fixed.get(task, chain.loss_weight)
        users = model.users_for(task)
        pool_sc = sc.replace(**{chain.section: {"num_users": users[1]}}) if users else sc
        layout = model.layouts.get(task, "")
        # a drop of one time sample has no Doppler: its pool keeps the scenario's speed
        t, k = chain.num_time(sc), chain.num_users(pool_sc)
        speed = tuple(tr.speed_kmh) if t > 1 else sc.channel.speed_kmh

        def pool(n, seed):
            return channel_pool(pool_sc, n, seed, speed, cache, k, t, task, show)

        if tr.dataset:
            self.data = TaskData(task, dataset_pool(tr.dataset, sc, task), dims, sc, tr, spec.seed, layout, users)
        elif tr.pool_drops:
            self.data = TaskData(task, pool(tr.pool_drops, derive_seed(spec.seed, "train")), dims, sc, tr,
                                 spec.seed, layout, users)
        else:
            where = "cpu" if tr.data_device == "cpu" else str(acc.device)
            source = ChannelSource(pool_sc.replace(run={"device": where}), seed=derive_seed(spec.seed, "fresh"))
            drops = drops_per_batch(task, pool_sc, self.batch_size, layout, k, t)
            self.data = FreshData(task, source, drops, speed, k, t, dims, sc, tr, spec.seed, layout, users,
                                  tr.drops_reuse)
        val_pool = pool(tr.val_drops, derive_seed(spec.seed, "val"))

        def val_of(scen):
            data = TaskData(task, val_pool, dims, scen, tr, spec.seed + 1, layout)
            batches = [_to(b, acc.device) for b in data.val_batches(self.batch_size, spec.seed)]
            return batches, reference_metrics(task, batches, scen.replace(run={"device": str(acc.device)}))

        self.val, self.reference = val_of(sc)
        # a model serving a range of K is also validated at each K (the first k of the pool's K_max
        # users), its metrics suffixed _k<K>: a K it has not learned shows in the log
        self.by_k = {} if not users or users[0] == users[1] else \
            {k: val_of(sc.replace(**{chain.section: {"num_users": k}})) for k in range(users[0], users[1] + 1)}


def _step_seed(spec, step: int, task: str, single: bool, process: int) -> int:
    # one task: the seeds of the single-task harness (shipped agents retrain identically)
    return derive_seed(spec.seed, "step", step, process) if single else \
        derive_seed(spec.seed, "step", task, step, process)


def train_agent(path: str | Path, steps: int | None = None, resume: bool = True,
                progress: bool = True, overwrite: bool = False, count_flops: bool = False) -> dict:
    """Train the agent in ``path`` per its agent.toml; returns the ``[result]`` table written.

    Several tasks (``agent.tasks``) train together: every step draws one batch of each task and
    minimises ``sum_t train.loss_weights[t] * loss_t`` (one gradient step on the paper's weighted
    objective; a random task per step would give each task a third of the steps and a noisier
    mixture); ``train.loss_weights = "uncertainty"`` learns the weights instead
    (:mod:`~linksim.training.weights`; ``loss_weight`` rows in the log). Batches are drawn ahead
    of the trainer by ``train.data_workers`` processes, from new drops each step by default.
    Training stops at ``steps``, at the wall-clock cap or on a validation plateau
    (:class:`~linksim.training.stopping.Plateau`, over the trained validations); the weights of
    the best validation are saved, the starting weights (validated at step 0) included: an agent
    that training never improved keeps them and says so (``best_step = 0``). Per-task losses, the
    weighted total (task ``all``), each task's validation
    metrics beside its classical references, and the data wait go to ``train_log.csv``.

    ``count_flops``: the first step runs under :class:`torch.utils.flop_counter.FlopCounterMode`
    and ``[result] step_flops`` holds its FLOPs (forward and backward of every task's batch), for
    the MFU that ``bench/gpu.py`` prints.

    A trained agent (weights and ``[result]``) is refused unless ``overwrite`` is set
    (:func:`~linksim.training.guard.check_overwrite`), before anything is built.
    """
    check_overwrite(path, overwrite)
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm.auto import tqdm

    spec = read_agent(path)
    sc = load_scenario(spec.scenario_path())
    tasks = agent_tasks(spec)
    single = len(tasks) == 1
    dims = Dims.from_scenario(sc, tasks[0])
    tr = spec.train
    if steps is not None and steps <= 0:
        raise LinksimError(f"--steps must be > 0, got {steps}")
    total = steps or tr.steps

    # a multi-task model's other heads take no part in one task's loss: DDP must allow that
    ddp = DistributedDataParallelKwargs(find_unused_parameters=len(arch_spec(spec.arch).tasks) > 1)
    _fit_accelerator_state(tr.mixed_precision)
    acc = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp], mixed_precision=tr.mixed_precision)
    torch.manual_seed(derive_seed(spec.seed, "init"))
    model = build_model(spec.arch, dims, spec.model, tasks).train()   # (a frozen backbone may load in eval mode)
    if model.pretrains and tr.label_steps == 0:
        raise LinksimError(f"{spec.path / 'agent.toml'}: model.encoders = \"contrastive\" pre-trains the encoders in "
                           "the first stage: set train.label_steps > 0")
    weights = UncertaintyWeights({t: chain_class(t).loss_weight for t in tasks}) \
        if tr.loss_weights == UNCERTAINTY and not single else None
    params = [p for p in model.parameters() if p.requires_grad] + list(weights.parameters() if weights else [])
    opt = torch.optim.Adam(params, lr=tr.lr, weight_decay=tr.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=tr.lr_min)
    wrapped, opt, sched = acc.prepare(_LossModule(model, weights), opt, sched)
    # checkpoints hold what training changes: a frozen backbone is rebuilt from its source on resume
    # (SmolLM2's 6 layers are 210 MB of a 230 MB checkpoint; a 7B backbone would be 14 GB per save)
    frozen = {n for n, p in wrapped.named_parameters() if not p.requires_grad}
    acc.register_save_state_pre_hook(lambda models, weights, out: [w.pop(k) for w in weights for k in
                                                                    list(w) if k in frozen])

    cache = spec.path.parent / ".cache"   # shared by the agents of one folder (pools are keyed by content)
    show = progress and acc.is_local_main_process
    runs = [_TaskRun(t, spec, sc, dims, model, acc, cache, show) for t in tasks]

    ckpt, log_file = spec.path / "checkpoint", spec.path / "train_log.csv"
    state_file, best_dir, start_dir = ckpt / "step.json", ckpt / "best", ckpt / "start"
    start, wall_before = 0, 0.0
    plateau = Plateau(tr.patience, tr.min_delta)
    best_metrics: dict = {}
    start_metrics: dict = {}
    # the global RNG (dropout) starts from the seed, whether or not the pools above came from a cache
    torch.manual_seed(derive_seed(spec.seed, "train-rng"))
    if resume and state_file.is_file():
        _load_checkpoint(acc, ckpt, wrapped, frozen)
        st = json.loads(state_file.read_text())
        start, wall_before = st["step"], st["wall_time_s"]
        plateau = Plateau(**st.get("plateau", plateau.state()))
        best_metrics = st.get("best_metrics", {})
        start_metrics = st.get("start_metrics", {})
    elif log_file.exists():
        log_file.unlink()
    batches = StepBatches({r.task: (r.data, r.batch_size) for r in runs},
                          lambda step, task: _step_seed(spec, step, task, single, acc.process_index),
                          lambda step: "labels" if step < tr.label_steps else "rate")
    t0 = time.time()
    log_rows, metrics, stopped, waited, step_flops = [], {}, "steps", 0.0, 0.0
    # a resumed run's bar counts the steps it runs (tqdm's rate would count resumed ones as instant)
    bar = tqdm(total=total - start, desc=f"train {spec.path.name}" + (f" (from step {start})" if start else ""),
               unit="step", disable=not show)
    if start == 0:
        # the starting weights are a candidate too (the LLM predictor starts as `ar`): the curve's
        # first point, and what the agent keeps if no trained validation beats it. The plateau
        # rule counts trained validations only (a model that first leaves its start and then comes
        # back is not stopped for it).
        start_metrics = _validate_all(acc.unwrap_model(wrapped).model, runs)
        log_rows += [(0, t, batches.stage_of(0), "", "", k, v) for t, m in start_metrics.items()
                     for k, v in m.items()]
        if acc.is_main_process:
            acc.unwrap_model(wrapped).model.save_weights(_fresh_dir(start_dir))
    loader = iter(step_loader(batches, start, total, tr.data_workers))
    done = start
    threads = torch.get_num_threads()
    if acc.device.type == "cpu" and tr.data_workers:
        # the workers draw the data on their own cores: measured (bench/train_data.py, GRU on 2
        # cores) 4.9 s/step with the trainer's 2 threads contending with one worker, vs 1.4 in-process
        torch.set_num_threads(max(1, threads - tr.data_workers))
    try:
        for step in range(start, total):
            if plateau.stop():
                stopped = "plateau"
                break
            if tr.max_minutes and wall_before + time.time() - t0 > 60 * tr.max_minutes:
                stopped = "wall clock"
                break
            stage = batches.stage_of(step)
            tw = time.time()
            step_batches = next(loader)
            waited += time.time() - tw
            opt.zero_grad()
            step_loss, rows = 0.0, []
            counter = _flop_counter() if count_flops and step == start else contextlib.nullcontext()
            with counter:
                for run in runs:
                    batch = _to(step_batches[run.task], acc.device) | {"task": run.task}
                    loss, objective = wrapped(batch)
                    lv = loss.detach().item()
                    if not torch.isfinite(loss):
                        raise LinksimError(f"{spec.path}: {run.task} loss is {lv} at step {step} "
                                           "(try a lower train.lr)")
                    weight = run.weight if weights is None else weights.weight(run.task)
                    acc.backward(loss if single else run.weight * loss if objective is None else objective)
                    step_loss += lv if single else weight * lv
                    rows.append((run.task, lv))
            if count_flops and step == start:
                step_flops = float(counter.get_total_flops())
            if not single:
                rows.append(("all", step_loss))
            if tr.grad_clip > 0:
                # the model's gradients only: the log-variances' own (O(1)) must not shrink them
                acc.clip_grad_norm_(wrapped.parameters() if weights is None else model.parameters(), tr.grad_clip)
            opt.step()
            sched.step()
            lr = f"{sched.get_last_lr()[0]:.3g}"
            log_rows += [(step + 1, t, stage, f"{v:.6g}", lr, "", "") for t, v in rows]
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4g}")
            done = step + 1
            if done % tr.val_every == 0 or done == total:
                metrics = _validate_all(acc.unwrap_model(wrapped).model, runs)
                log_rows += [(done, t, stage, "", "", k, v) for t, m in metrics.items() for k, v in m.items()]
                log_rows.append((done, "all", stage, "", "", "data_wait_s", round(waited, 3)))
                if weights is not None:
                    log_rows += [(done, t, stage, "", "", "loss_weight", round(weights.weight(t), 6)) for t in tasks]
                # the plateau rule waits for the last stage (precoders: the rate loss after the labels)
                if plateau.update(_score(metrics), done, count=batches.stage_of(done) != "labels") \
                        and acc.is_main_process:
                    acc.unwrap_model(wrapped).model.save_weights(_fresh_dir(best_dir))
                    best_metrics = metrics
            if done % tr.checkpoint_every == 0 or done == total:
                _checkpoint(acc, ckpt, log_file, log_rows, state_file, done, wall_before + time.time() - t0,
                            plateau, best_metrics, start_metrics)
                log_rows = []
    finally:
        torch.set_num_threads(threads)
        bar.close()
    if log_rows:
        _checkpoint(acc, ckpt, log_file, log_rows, state_file, done, wall_before + time.time() - t0,
                    plateau, best_metrics, start_metrics)
    acc.wait_for_everyone()
    net = acc.unwrap_model(wrapped).model
    keep_start = bool(start_metrics) and (start_dir / WEIGHTS).is_file() and \
        (not best_metrics or _score(start_metrics) < _score(best_metrics))
    if keep_start:
        net.load_weights(start_dir)                      # training never beat where it started
        metrics = start_metrics
    elif best_metrics and (best_dir / WEIGHTS).is_file():
        net.load_weights(best_dir)                       # the best validated weights are the agent's
        metrics = best_metrics
    elif not metrics:
        metrics = _validate_all(net, runs)
    steps_run = max(done - start, 1)
    result = {("task" if single else "tasks"): tasks[0] if single else list(tasks), "steps": done,
              "best_step": 0 if keep_start else plateau.best_step if best_metrics else done, "stopped": stopped,
              "wall_time_s": round(wall_before + time.time() - t0, 1),
              "data_wait_fraction": round(waited / max(time.time() - t0, 1e-9), 4) if steps_run else 0.0,
              "trainable_parameters": sum(p.numel() for p in net.parameters() if p.requires_grad),
              "scenario_hash": sc.hash, "dims": dims.as_dict()}
    result |= metrics[tasks[0]] if single else metrics
    if count_flops and step_flops:
        result["step_flops"] = step_flops
    if net.fingerprint:
        result["backbone"] = {"fingerprint": net.fingerprint} | net.backbone_record()
    result |= {"trained_on": time.strftime("%Y-%m-%d"), "device": str(acc.device),
               "versions": {k: v or "unknown" for k, v in
                            versions("linksim", "torch", "accelerate", "sionna-no-rt").items()}}
    if acc.is_main_process:
        net.save_weights(spec.path)
        write_result(spec, result)
    return result


def _fit_accelerator_state(mixed_precision: str) -> None:
    """Accelerate keeps one process-wide state; a process that trains agents of different
    ``train.mixed_precision`` (``linksim train a b``, ``linksim paper``) drops it between them
    (the process group, Accelerate's ``PartialState``, is kept)."""
    from accelerate.state import AcceleratorState

    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and current != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def _flop_counter():
    """Counts the FLOPs of the first step run (``count_flops``: the MFU of bench/gpu.py)."""
    from torch.utils.flop_counter import FlopCounterMode
    return FlopCounterMode(display=False)


def _score(metrics: dict) -> float:
    """The run's validation score: the tasks' scores (dB, lower is better) summed."""
    return sum(chain_class(t).score(m) for t, m in metrics.items())


def _fresh_dir(path: Path) -> Path:
    import shutil
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _load_checkpoint(acc, ckpt: Path, wrapped, frozen: set) -> None:
    """Resume from ``ckpt``: every tensor of the model but the frozen parameters must be there
    (the frozen ones come from the model's own build, as when the run began)."""
    from safetensors import safe_open

    files = sorted(ckpt.glob("model*.safetensors"))
    if files:
        with safe_open(str(files[0]), "pt") as f:
            stored = set(f.keys())
        missing = sorted(set(acc.get_state_dict(wrapped, unwrap=False)) - frozen - stored)
        if missing:
            raise LinksimError(f"{ckpt}: the checkpoint lacks {len(missing)} trained tensors of this "
                               f"model (e.g. {missing[0]}): it was written for another recipe; "
                               "train with --restart")
    acc.load_state(str(ckpt), strict=False)


def _checkpoint(acc, ckpt, log_file, log_rows, state_file, done, wall_s, plateau, best_metrics,
                start_metrics) -> None:
    """Append the log, save the optimiser/model/RNG state and the stopping state (resume point)."""
    if acc.is_main_process:
        _append_log(log_file, log_rows)
    acc.save_state(str(ckpt))          # every process: Accelerate writes from the main one
    if acc.is_main_process:
        state_file.write_text(json.dumps({"step": done, "wall_time_s": wall_s, "plateau": plateau.state(),
                                          "best_metrics": best_metrics, "start_metrics": start_metrics}))


def _validate_all(model, runs) -> dict:
    out = {}
    for r in runs:
        out[r.task] = validate(model, r.task, r.val, r.reference)
        for k, (batches, reference) in r.by_k.items():
            out[r.task] |= {f"{name}_k{k}": v for name, v in validate(model, r.task, batches, reference).items()}
    return out


def _append_log(path: Path, rows: list) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(LOG_COLUMNS)
        w.writerows(rows)
