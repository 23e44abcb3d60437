"""LLM-agent benchmarks, run by bench/run.py after the classical ones (``--skip-llm`` leaves them out).

The agent is the default ``llm`` architecture (SmolLM2-135M, first 6 layers frozen, LoRA r=16 on the
7 projections, task heads), untrained, but with its zero-initialised layers (the heads' last layers,
LoRA's B) set to small random values: otherwise every output ignores the LLM and the cache / concat
comparison would agree trivially (speed and memory do not depend on the weights). Channels are
UMa drops from ``ChannelSource(sc, seed=1)`` (precoding: subcarrier 0; detection: the same matrices
as uplink ``[M, K]``).

1. PRE inference per sample at batch 256: the agent (prefix cache on) vs WMMSE run for exactly 100
   iterations (``max_iter=100, tol=0``) and, for reference, with its default stopping (``tol=1e-3``);
   ratio = WMMSE time / LLM time (> 1: the agent is faster).
2. Prefix cache at inference: the same task forward with ``prefix_mode`` ``"cache"`` (instruction
   key/values computed once per task) vs ``"concat"`` (instruction re-run for every sample), for
   precoding at batch 256 (shares its timings with 1) and detection at batch 64; speed-up = concat /
   cache, and the largest absolute difference of the outputs.
3. Training samples/s per task at batch 32 (forward + backward + Adam on the trainable parameters)
   and model-FLOP utilisation: model FLOPs per step / step time, over the float32 matmul rate
   measured first (2048^3, current thread count).
4. Memory of training, fp32 vs NF4 vs LoftQ backbone: 3 detection steps at batch 32, each variant
   in a fresh process; the model's live weights (parameters + buffers), resident size once built
   (after ``malloc_trim``: quantisation frees the fp32 weights), and the peak during the steps
   alone. RSS also holds the interpreter, torch and what the allocator keeps. The peak is
   VmHWM, reset after the build (``/proc/self/clear_refs``), not ``ru_maxrss``: a child's ru_maxrss
   starts at the high-water mark of the address space it was exec'd from (the parent's, with
   vfork), so it would report the parent's memory. Plus ``backbone_bytes`` storage totals.

    python bench/llm.py [--scenario scenarios/quick.toml] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from torch import nn

import linksim
from linksim.agents import Dims, build_model
from linksim.chains.detection import detection_batch
from linksim.chains.prediction import prediction_batch
from linksim.llm.prompt import instruction_for
from run import interleaved

MEMORY_STEPS = 3
QUANTIZATIONS = ("none", "nf4", "loftq")

# one memory variant: build, reset the peak, train MEMORY_STEPS detection steps; prints JSON (KiB)
MEMORY_CHILD = r"""
import json, sys
import torch, linksim
from linksim.agents import Dims, build_model
from linksim.chains.detection import detection_batch

def vm():
    return {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(("VmRSS", "VmHWM"))}

scenario, quant, steps, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sc = linksim.load_scenario(scenario)
dims = Dims.from_scenario(sc, "precoding")
model = build_model("llm", dims, {"backbone": {"quantization": quant}}).train()
g = torch.Generator().manual_seed(0)
m, k = dims.num_bs_antennas, dims.num_users          # i.i.d. Rayleigh: memory does not depend on h
h = torch.complex(torch.randn(b, m, k, generator=g), torch.randn(b, m, k, generator=g)) / 2 ** 0.5
batch = detection_batch(h, torch.full((b,), 10 ** (-sc.detection.snr_db / 10)), dims.symbols_per_sample,
                        dims.bits_per_symbol, g) | {"task": "detection"}
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
import ctypes
ctypes.CDLL("libc.so.6").malloc_trim(0)             # hand the fp32 weights freed by quantisation back
live = {t.data_ptr(): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
built = vm()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")                                     # VmHWM := VmRSS: the peak from here on is training's
for _ in range(steps):
    opt.zero_grad()
    model.training_loss(batch).backward()
    opt.step()
print(json.dumps({"built": built["VmRSS"], "build_peak": built["VmHWM"], "train_peak": vm()["VmHWM"],
                  "tensors": sum(live.values()) / 1024}))
"""


def load(scenario: str):
    """(scenario, agent in eval mode with its all-zero trainable tensors drawn N(0, 0.02^2), load time [s])."""
    sc = linksim.load_scenario(scenario)
    t = time.perf_counter()
    model = build_model("llm", Dims.from_scenario(sc, "precoding"), {}).eval()
    sec = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and not p.any():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return sc, model, sec


def bench_inference(model, sc, h, repeats):
    """Benches 1 and 2: PRE (LLM cache / concat, WMMSE) at h's batch, DET cache / concat at batch 64."""
    pre = sc.precoding
    p_tx, nv = 10 ** (pre.tx_power_dbw / 10), 10 ** (pre.noise_power_dbw / 10)
    b, k, m = h.shape
    out = {}

    def llm(mode, task, *inputs):
        def f():
            model.prefix_mode = mode
            out[task, mode] = model.task_forward(task, *inputs)
        return f

    wmmse100 = linksim.blocks.get("wmmse", max_iter=100, tol=0.0)
    wmmse = linksim.blocks.get("wmmse")
    det_b, det_nv = 64, 10 ** (-sc.detection.snr_db / 10)
    det = detection_batch(h[:det_b].transpose(1, 2).contiguous(), torch.full((det_b,), det_nv),
                          sc.detection.symbols_per_sample, sc.detection.bits_per_symbol,
                          torch.Generator().manual_seed(0))
    with torch.no_grad():
        med = interleaved({"cache": llm("cache", "precoding", h, p_tx, nv),
                           "concat": llm("concat", "precoding", h, p_tx, nv),
                           "wmmse100": lambda: wmmse100(h, p_tx, nv), "wmmse": lambda: wmmse(h, p_tx, nv)},
                          repeats)
        det_med = interleaved({"cache": llm("cache", "detection", det["y"], det["h"], det["noise_var"]),
                               "concat": llm("concat", "detection", det["y"], det["h"], det["noise_var"])},
                              repeats)
    model.prefix_mode = "cache"
    ms = {key: v / b * 1e3 for key, v in med.items()}
    print(f"llm PRE per sample, batch {b}, K={k}, M={m}, P/sigma^2 = {pre.tx_power_dbw - pre.noise_power_dbw:g} dB: "
          f"llm (prefix cache) {ms['cache']:.3f} ms, WMMSE 100 it {ms['wmmse100']:.3f} ms  "
          f"ratio wmmse/llm {med['wmmse100'] / med['cache']:.3f}  (WMMSE tol 1e-3, "
          f"{wmmse.last_iterations.double().mean():.1f} it: {ms['wmmse']:.3f} ms, "
          f"ratio {med['wmmse'] / med['cache']:.3f})")
    for task, batch, tm in (("precoding", b, med), ("detection", det_b, det_med)):
        diff = (out[task, "cache"] - out[task, "concat"]).abs().max().item()
        close = torch.allclose(out[task, "cache"], out[task, "concat"], rtol=1e-4, atol=1e-5)
        print(f"llm prefix {task}, batch {batch}: cache {tm['cache'] * 1e3:8.1f} ms, concat "
              f"{tm['concat'] * 1e3:8.1f} ms  speed-up {tm['concat'] / tm['cache']:.1f}x  "
              f"max |diff| {diff:.1e} ({'allclose' if close else 'NOT allclose'})")


def matmul_gflops(repeats, n=2048):
    """Measured float32 matmul rate [GFLOP/s] at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / interleaved({"mm": lambda: a @ b}, repeats)["mm"] / 1e9


def bench_training(model, sc, h, h_pred, repeats, batch=32):
    """Bench 3: samples/s and MFU of one training step per task."""
    dims, k = model.dims, h.shape[1]
    p_tx, nv = 10 ** (sc.precoding.tx_power_dbw / 10), 10 ** (sc.precoding.noise_power_dbw / 10)
    g = torch.Generator().manual_seed(0)
    batches = {
        "prediction": prediction_batch(h_pred[:batch], dims.history, 10 ** (-sc.prediction.snr_db / 10), g),
        "detection": detection_batch(h[:batch].transpose(1, 2).contiguous(),
                                     torch.full((batch,), 10 ** (-sc.detection.snr_db / 10)),
                                     dims.symbols_per_sample, dims.bits_per_symbol, g),
        "precoding": {"stage": "rate", "h": h[:batch], "p_tx": torch.full((batch,), p_tx),
                      "noise_var": torch.full((batch,), nv)},
    }
    data_tokens = {"prediction": batch * dims.history, "detection": batch * (k + dims.symbols_per_sample),
                   "precoding": batch * k}
    # Model FLOPs = 6 N D: N = weights of the decoder layers' linears (frozen base + LoRA A, B) that
    # every token goes through, D = tokens per step: the data tokens plus the instruction prefix,
    # which training recomputes once per step (batch 1, with gradients: LoRA changes it). Left out:
    # attention scores (data tokens attend to a ~60-token prefix: ~1% of the linears at width 576),
    # the task heads, the embedding. 6 N D counts weight gradients for all N although the frozen
    # base gets none (the real work is nearer 4 N D), as is usual for MFU.
    n_mm = sum(mod.weight.numel() for mod in model.llm.model.layers.modules() if isinstance(mod, nn.Linear))
    prefix = {t: len(model.llm.tokenize(instruction_for(t, dims, num_users=k))) for t in batches}
    peak = matmul_gflops(repeats)
    print(f"matmul float32 2048^3, {torch.get_num_threads()} threads: {peak:.1f} GFLOP/s")

    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(batch):
        def f():
            opt.zero_grad()
            model.training_loss(batch).backward()
            opt.step()
        return f

    med = interleaved({t: step(bt | {"task": t}) for t, bt in batches.items()}, repeats)
    model.eval()
    for t, sec in med.items():
        gflops = 6 * n_mm * (data_tokens[t] + prefix[t]) / sec / 1e9
        print(f"llm training {t:10s} batch {batch} ({data_tokens[t]} data + {prefix[t]} prefix tokens, "
              f"N = {n_mm / 1e6:.1f} M): {batch / sec:6.1f} samples/s, {sec * 1e3:6.0f} ms/step, "
              f"{gflops:5.1f} GFLOP/s, MFU {gflops / peak:.2f}")


def bench_memory(scenario, model, batch=32):
    """Bench 4: RSS of a training process per backbone quantization, and backbone storage."""
    parts = []
    for q in QUANTIZATIONS:
        r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, scenario, q, str(MEMORY_STEPS), str(batch)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"memory bench ({q}) failed:\n{r.stderr[-3000:]}")
        kib = json.loads(r.stdout.strip().splitlines()[-1])
        parts.append(f"{'fp32' if q == 'none' else q} weights {kib['tensors'] / 1024:.0f} MiB, "
                     f"built {kib['built'] / 1024:.0f} MiB "
                     f"(build peak {kib['build_peak'] / 1024:.0f}), train peak {kib['train_peak'] / 1024:.0f} MiB "
                     f"(+{(kib['train_peak'] - kib['built']) / 1024:.0f})")
    by = linksim.llm.backbone_bytes(model.llm.model)
    print(f"llm training RSS, detection batch {batch} x {MEMORY_STEPS} steps: " + "; ".join(parts))
    print(f"llm backbone storage: fp32 {by['fp32'] / 2**20:.1f} MiB, fp16 {by['fp16'] / 2**20:.1f} MiB, "
          f"nf4 {by['nf4'] / 2**20:.1f} MiB (linears {by['linear_params'] / 1e6:.1f} M params; "
          f"LoRA {by['lora'] / 2**20:.1f} MiB apart)")


def run(scenario: str, repeats: int = 3) -> None:
    """All LLM benches on ``scenario``."""
    sc, model, sec = load(scenario)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"llm agent: {model.llm.spec.source} {model.llm.num_layers} layers, LoRA r={model.lora_options['r']}, "
          f"{trainable / 1e6:.2f} M trainable, loaded in {sec:.1f} s")
    src = linksim.ChannelSource(sc, seed=1)
    h = src.sample(256, num_users=sc.precoding.num_users, num_time=1)[:, 0, :, :, 0]      # [256, K, M]
    cp = sc.prediction
    h_pred = src.sample(32, num_users=1, num_time=cp.history + cp.horizon)[:, :, 0]     # [32, L+P, M, F]
    bench_inference(model, sc, h, repeats)
    bench_training(model, sc, h, h_pred, repeats)
    bench_memory(scenario, model)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="scenarios/quick.toml")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    run(a.scenario, a.repeats)
