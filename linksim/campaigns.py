"""Named sets of sweeps with their figures: ``linksim demo`` and ``linksim baselines``."""
from __future__ import annotations

from pathlib import Path

from .plots import plot_dir
from .sweep import sweep

# (task, blocks, --over) per sweep; each goes to OUT/<task>/
DEMO = (
    ("precoding", "zf,rzf,mrt,wmmse,dpc_bound", "tx_power_dbw=-10:10:5"),
    ("detection", "zf_det,lmmse,kbest", "snr_db=0:20:4"),
    ("prediction", "outdated,ar", "speed_kmh=10:100:30"),
)

# the trained baselines beside the classical blocks (agents/ shipped with the repository)
BASELINES = (
    ("detection", "zf_det,lmmse,kbest,agent:agents/detnet,agent:agents/oampnet,agent:agents/dnn",
     "snr_db=0:20:4"),
    ("prediction", "outdated,ar,agent:agents/rnn,agent:agents/lstm,agent:agents/gru,agent:agents/transformer",
     "speed_kmh=10:100:10"),
    ("precoding", "zf,wmmse,agent:agents/cnn,dpc_bound", "tx_power_dbw=-10:10:5"),
)

CAMPAIGNS = {"demo": DEMO, "baselines": BASELINES}


def run_campaign(name: str, scenario: str | Path, out: str | Path, progress: bool = True) -> list[Path]:
    """Run the sweeps of campaign ``name`` into ``out/<task>/`` (resumable) and draw the figures."""
    figures = []
    for task, blocks, over in CAMPAIGNS[name]:
        d = Path(out) / task
        sweep(scenario, task, blocks.split(","), over, d, progress=progress)
        figures += [p for p in plot_dir(d) if p.suffix == ".png"]
    return figures
