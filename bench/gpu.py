"""The GPU run (`make gpu`): on a CUDA machine, (1) the device tests with ``device = "cuda"``,
(2) the multi-task LLM agent trained for a fixed number of minutes with bf16 autocast, at a
GPU-sized batch, on fresh drops drawn on the GPU, then (3) one line per figure: samples/s, MFU and
peak memory. The agent lands in ``agents/llm-multitask-gpu`` (its learning curve beside it), next to
the CPU agent trained from the same recipe (``runs/llm-multitask``).

    python bench/gpu.py [--minutes 4] [--batch 256] [--out agents/llm-multitask-gpu] [--skip-tests]

MFU is the model FLOPs of one training step (counted by ``torch.utils.flop_counter`` on the first
real step: forward and backward, the frozen backbone included) times the steps per second, over the
GPU's dense bf16 peak (``--peak-tflops``, default 989: H100/H200 SXM). On a machine without CUDA it
stops at once with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

RECIPE = Path("runs/llm-multitask/agent.toml")


def gpu_recipe(minutes: float, batch: int) -> str:
    """``runs/llm-multitask``'s recipe for the GPU: batch ``batch`` per task, bf16 autocast, drops
    drawn on the GPU in the trainer, a wall-clock budget of ``minutes``, steps scaled so the cosine
    schedule and the label stage span about that budget."""
    text = RECIPE.read_text().split("\n[result]")[0]
    text = re.sub(r"(?m)^# .*\n(?=\[agent\])", "", text)
    head = (f"# The multi-task LLM agent trained on one GPU by `make gpu` (bench/gpu.py): the recipe of\n"
            f"# runs/llm-multitask at batch {batch} per task, bf16 autocast, drops drawn on the GPU,\n"
            f"# {minutes:g} minutes of wall clock.\n")
    text = re.sub(r'(?m)^description = ".*"$', 'description = "multi-task LLM agent trained on one GPU (make gpu)"', text)
    text = re.sub(r"(?m)^batch_size = \d+", f"batch_size = {batch}", text)
    text = re.sub(r"(?m)^data_workers = \d+.*$", 'data_workers = 0\nmixed_precision = "bf16"\ndata_device = "accelerator"', text)
    text = re.sub(r"(?m)^steps = \d+", "steps = 4000", text)
    text = re.sub(r"(?m)^label_steps = \d+", "label_steps = 400", text)
    text = re.sub(r"(?m)^(val_every|checkpoint_every) = \d+", r"\1 = 200", text)
    text = re.sub(r"(?m)^patience = \d+", "patience = 0", text)
    return head + text.rstrip() + f"\nmax_minutes = {minutes:g}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="training wall clock (default 4)")
    ap.add_argument("--batch", type=int, default=256, help="samples per task and step (default 256)")
    ap.add_argument("--out", default="agents/llm-multitask-gpu", help="the agent folder to train")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    ap.add_argument("--skip-tests", action="store_true", help="train only")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("bench/gpu.py: error: no CUDA GPU here (torch.cuda.is_available() is False); "
              "make gpu runs on a CUDA machine", file=sys.stderr)
        return 2
    t0 = time.time()
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    if not args.skip_tests:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/test_device.py", "-k", "cuda"],
                             env={**__import__("os").environ, "LINKSIM_TEST_CUDA": "1"})
        print(f"device tests on cuda: {'passed' if rc == 0 else f'FAILED (exit {rc})'} "
              f"({time.time() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    if (out / "model.safetensors").is_file():
        print(f"bench/gpu.py: error: {out} is trained already; move it away or pass --out", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "agent.toml").write_text(gpu_recipe(args.minutes, args.batch))

    from linksim.training import train_agent
    from linksim.training.curves import plot_learning_curve

    torch.cuda.reset_peak_memory_stats()
    t1 = time.time()
    result = train_agent(out, progress=True, count_flops=True)
    wall = time.time() - t1
    peak = torch.cuda.max_memory_allocated() / 2**30
    steps = result["steps"]
    tasks = len(result["tasks"])
    flops = result["step_flops"]
    sps = steps * args.batch * tasks / result["wall_time_s"]
    mfu = flops * steps / result["wall_time_s"] / (args.peak_tflops * 1e12)
    plot_learning_curve(out)
    figures = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": steps,
               "batch_per_task": args.batch, "tasks": tasks, "train_wall_s": round(result["wall_time_s"], 1),
               "samples_per_s": round(sps, 1), "step_tflop": round(flops / 1e12, 4), "mfu": round(mfu, 5),
               "peak_memory_gib": round(peak, 2), "data_wait_fraction": result.get("data_wait_fraction"),
               "total_wall_s": round(time.time() - t0, 1), "train_call_wall_s": round(wall, 1)}
    (out / "gpu_run.json").write_text(json.dumps(figures, indent=1) + "\n")
    print("\n".join(f"{k:>20}: {v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
