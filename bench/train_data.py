"""Data wait of training on fresh drops: for one shipped recipe per architecture, train a copy for a
few steps on fresh drops (``pool_drops = 0``, the recipe's ``drops_reuse``) and print, side by
side, the step time and the fraction of it the trainer waited for data, with the batches drawn by
0 (in the trainer) or 1 worker process. Goal: data wait < 15% of the step time with a worker.

    python bench/train_data.py [--steps 40] [--agents detnet,oampnet,...] [--workers 0,1]
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

RECIPES = ("detnet", "oampnet", "dnn", "cnn", "gru", "lstm", "rnn", "transformer", "llm-multitask")


def trial(agent: str, steps: int, workers: int, root: Path) -> dict:
    """Train a copy of ``agents/AGENT`` for ``steps`` steps on fresh drops; its result table."""
    from linksim.training import train_agent

    src = Path("agents") / agent
    text = (src / "agent.toml").read_text().split("\n[result]")[0]
    text = re.sub(r'scenario = "([^"]+)"', lambda m: f'scenario = "{Path(m.group(1)).resolve()}"', text)
    text = re.sub(r"(?m)^pool_drops = .*$", "pool_drops = 0", text)
    text = re.sub(r"(?m)^(val_every|checkpoint_every) = .*$", rf"\1 = {steps}", text)
    text = re.sub(r"(?m)^(data_workers|patience|max_minutes) = .*\n", "", text)     # drops_reuse is the recipe's
    text = re.sub(r"(?m)^\[train\]$", f"[train]\ndata_workers = {workers}\npatience = 0", text, count=1)
    d = root / f"{agent}-w{workers}"
    d.mkdir(parents=True)
    (d / "agent.toml").write_text(text)
    t0 = time.time()
    result = train_agent(d, steps=steps, progress=False)
    return result | {"bench_wall_s": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--agents", default=",".join(RECIPES))
    ap.add_argument("--workers", default="0,1")
    a = ap.parse_args()
    workers = [int(w) for w in a.workers.split(",")]
    print(f"fresh drops every step, {a.steps} steps per run; wait = fraction of the run spent waiting for data")
    print(f"{'agent':<16}" + "".join(f"{f'w={w} s/step':>14}{f'w={w} wait':>12}" for w in workers))
    with tempfile.TemporaryDirectory(prefix="linksim-bench-") as tmp:
        for agent in a.agents.split(","):
            cells = []
            for w in workers:
                r = trial(agent, a.steps, w, Path(tmp))
                cells.append(f"{r['wall_time_s'] / a.steps:>14.3f}{100 * r['data_wait_fraction']:>11.1f}%")
            print(f"{agent:<16}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
