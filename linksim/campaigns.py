"""Named sets of sweeps with their figures: ``linksim demo`` and ``linksim baselines``."""
from __future__ import annotations

from pathlib import Path

from .plots import plot_dir
from .sweep import sweep

# (folder, scenario or None for the command's, task, blocks, --over): each sweep goes to OUT/<folder>/
DEMO = (
    ("precoding", None, "precoding", "zf,rzf,mrt,wmmse,dpc_bound", "tx_power_dbw=-10:10:5"),
    ("detection", None, "detection", "zf_det,lmmse,kbest", "snr_db=0:20:4"),
    ("prediction", None, "prediction", "outdated,ar", "speed_kmh=10:100:30"),
)

# the trained baselines beside the classical blocks (agents/ shipped with the repository)
BASELINES = (
    ("detection", None, "detection",
     "zf_det,lmmse,kbest,agent:agents/detnet,agent:agents/oampnet,agent:agents/dnn", "snr_db=0:20:4"),
    ("prediction", None, "prediction",
     "outdated,ar,agent:agents/rnn,agent:agents/lstm,agent:agents/gru,agent:agents/transformer",
     "speed_kmh=10:100:10"),
    ("precoding", None, "precoding", "zf,wmmse,agent:agents/cnn,dpc_bound", "tx_power_dbw=-10:10:5"),
    ("detection-paper", "scenarios/paper.toml", "detection",
     "zf_det,lmmse,kbest,agent:agents/oampnet-paper", "snr_db=-15:0:3"),
)

CAMPAIGNS = {"demo": DEMO, "baselines": BASELINES}


def run_campaign(name: str, scenario: str | Path, out: str | Path, progress: bool = True) -> list[Path]:
    """Run the sweeps of campaign ``name`` into ``out/<task>/`` (resumable) and draw the figures."""
    figures = []
    for folder, own_scenario, task, blocks, over in CAMPAIGNS[name]:
        d = Path(out) / folder
        sweep(own_scenario or scenario, task, blocks.split(","), over, d, progress=progress)
        figures += [p for p in plot_dir(d) if p.suffix == ".png"]
    return figures
