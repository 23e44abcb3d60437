"""Named sets of sweeps with their figures: ``linksim demo``, ``linksim baselines``, ``linksim llm``."""
from __future__ import annotations

from pathlib import Path

from .plots import plot_dir
from .sweep import Backend, sweep

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

LLM_AGENT = "agent:agents/llm-multitask"

# the multi-task LLM agent beside every baseline of each task (issue: "the five sweeps")
LLM = (
    ("prediction", None, "prediction",
     f"outdated,ar,agent:agents/rnn,agent:agents/lstm,agent:agents/gru,agent:agents/transformer,{LLM_AGENT}",
     "speed_kmh=10:100:10"),
    ("precoding", None, "precoding", f"zf,wmmse,agent:agents/cnn,{LLM_AGENT},dpc_bound", "tx_power_dbw=-10:10:5"),
    ("users", None, "precoding", f"zf,wmmse,{LLM_AGENT},dpc_bound", "num_users=3:8:1"),
    ("detection", None, "detection",
     f"lmmse,agent:agents/detnet,agent:agents/oampnet,{LLM_AGENT},kbest", "snr_db=0:20:4"),
    ("loop", None, "loop",
     f"outdated+wmmse,ar+wmmse,agent:agents/gru+wmmse,{LLM_AGENT}+wmmse,genie+wmmse", "speed_kmh=10:100:30"),
)

CAMPAIGNS = {"demo": DEMO, "baselines": BASELINES, "llm": LLM}


def run_campaign(name: str, scenario: str | Path, out: str | Path, progress: bool = True,
                 backend: str | Backend = "local") -> list[Path]:
    """Run the sweeps of campaign ``name`` into ``out/<task>/`` (resumable; points on ``backend``,
    a name or a :class:`~linksim.sweep.Backend` with its options) and draw the figures."""
    figures = []
    for folder, own_scenario, task, blocks, over in CAMPAIGNS[name]:
        d = Path(out) / folder
        sweep(own_scenario or scenario, task, blocks.split(","), over, d, progress=progress, backend=backend)
        figures += [p for p in plot_dir(d) if p.suffix == ".png"]
    return figures
