"""``make demo``: the classical blocks on the quick scenario, three sweeps and their figures."""
from __future__ import annotations

from pathlib import Path

from .plots import plot_dir
from .sweep import sweep

DEMO_SWEEPS = (
    ("precoding", "zf,rzf,mrt,wmmse,dpc_bound", "tx_power_dbw=-10:10:5"),
    ("detection", "zf_det,lmmse,kbest", "snr_db=0:20:4"),
    ("prediction", "outdated,ar", "speed_kmh=10:100:30"),
)


def run_demo(scenario: str | Path = "scenarios/quick.toml", out: str | Path = "results/demo",
             progress: bool = True) -> list[Path]:
    """Run the three demo sweeps into ``out/<task>/`` (resumable) and draw their figures."""
    figures = []
    for task, blocks, over in DEMO_SWEEPS:
        d = Path(out) / task
        sweep(scenario, task, blocks.split(","), over, d, progress=progress)
        figures += [p for p in plot_dir(d) if p.suffix == ".png"]
    return figures
