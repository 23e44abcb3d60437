"""The Ray backend against the local one on a CPU-bound sweep, side by side in one run.

A detection sweep with K-Best over 6 SNR points on the quick scenario, every point a fixed number
of drops (no early stop), run twice from the command line as a user would:

- ``--backend local`` with 2 torch threads (OMP_NUM_THREADS=2);
- ``--backend ray --workers 2``: two worker processes of 1 thread each (Ray sets OMP_NUM_THREADS=1),

so both use the same total threads (and, for reference, local with 1 thread: what one worker
does). Printed: each wall time, the ratio (local / ray; > 1 = Ray faster), Ray's start-up cost (``ray.init`` of a local cluster, then the first task in a worker
that imports linksim), and whether the two results.csv files are identical.

    python bench/ray_sweep.py [--drops 768] [--over snr_db=0:20:4] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import tomlkit

STARTUP = """
import logging, time
t0 = time.perf_counter()
import ray
ray.init(num_cpus={workers}, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
t1 = time.perf_counter()
@ray.remote
def warm():
    import linksim.sweep   # what a point task imports first (torch, Sionna, linksim)
    return 0
ray.get([warm.remote() for _ in range({workers})])
print(t1 - t0, time.perf_counter() - t1)
ray.shutdown()
"""


def scenario_file(src: str, drops: int, folder: Path) -> Path:
    """``src`` with every detection point run to exactly ``drops`` drops."""
    doc = tomllib.loads(Path(src).read_text())
    doc["name"] = doc.get("name", "bench") + "-ray-bench"
    doc["detection"].update(min_samples=drops, max_samples=drops, target_errors=10**9)
    path = folder / "bench.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="scenarios/quick.toml")
    ap.add_argument("--drops", type=int, default=768, help="drops per point")
    ap.add_argument("--over", default="snr_db=0:20:4")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sc = scenario_file(a.scenario, a.drops, tmp)
        sweep = [sys.executable, "-m", "linksim.cli", "sweep", str(sc), "--task", "detection",
                 "--blocks", "kbest", "--over", a.over, "--quiet"]
        env = dict(os.environ)
        local = timed(sweep + ["--out", str(tmp / "local")], env | {"OMP_NUM_THREADS": str(a.workers)})
        local1 = timed(sweep + ["--out", str(tmp / "local1")], env | {"OMP_NUM_THREADS": "1"})
        on_ray = timed(sweep + ["--out", str(tmp / "ray"), "--backend", "ray", "--workers",
                                str(a.workers)], env)
        out = subprocess.run([sys.executable, "-c", STARTUP.format(workers=a.workers)], env=env,
                             check=True, capture_output=True, text=True).stdout.split()
        init_s, warm_s = float(out[0]), float(out[1])
        same = (tmp / "local/results.csv").read_text() == (tmp / "ray/results.csv").read_text()
    print(f"detection, kbest, {a.over} ({a.drops} drops per point), {a.scenario}")
    print(f"  local, {a.workers} torch threads:        {local:7.1f} s")
    print(f"  local, 1 torch thread:           {local1:7.1f} s   (reference)")
    print(f"  ray, {a.workers} workers x 1 thread:     {on_ray:7.1f} s")
    print(f"  ratio local / ray:               {local / on_ray:7.2f}x   (goal >= 1.6)")
    print(f"  Ray start-up: ray.init {init_s:.1f} s + first task in each worker (imports) {warm_s:.1f} s")
    print(f"  ratio without the start-up:      {local / max(on_ray - init_s - warm_s, 1e-9):7.2f}x")
    print(f"  results.csv identical: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
