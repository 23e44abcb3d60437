"""Named sets of sweeps with their figures: ``linksim demo``, ``linksim baselines``, ``linksim llm``."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .plots import plot_dir
from .sweep import Backend, block_label, sweep

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
                 backend: str | Backend = "local", report: Callable[[str], None] | None = None) -> list[Path]:
    """Run the sweeps of campaign ``name`` into ``out/<folder>/`` (resumable; points on
    ``backend``) and draw the figures.

    :param name: ``demo``, ``baselines`` or ``llm`` (:data:`CAMPAIGNS`)
    :param scenario: the scenario of the sweeps that do not name their own
    :param out: the output folder
    :param progress: show progress bars
    :param backend: where the points run: a name or a :class:`~linksim.sweep.Backend` with its options
    :param report: called with each line of each sweep's headline numbers (:func:`headline`)
        as the sweep finishes, e.g. ``print``
    :output figures: the PNG files drawn

    .. rubric:: Examples

    .. code-block:: python

        from linksim.campaigns import run_campaign
        pngs = run_campaign("demo", "scenarios/quick.toml", "results/demo", report=print)
    """
    figures = []
    for folder, own_scenario, task, blocks, over in CAMPAIGNS[name]:
        d = Path(out) / folder
        store = sweep(own_scenario or scenario, task, blocks.split(","), over, d, progress=progress,
                      backend=backend)
        if report:
            for line in headline(store.rows, task, [block_label(b) for b in blocks.split(",")], folder):
                report(line)
        figures += [p for p in plot_dir(d) if p.suffix == ".png"]
    return figures


def headline(rows: list[dict], task: str, blocks: list[str], title: str = "") -> list[str]:
    """The numbers a sweep drew, in a few lines: each block's main metric (the task's
    ``val_metric``, else its first metric) at the first and the last grid point.

    :param rows: results.csv rows (:func:`~linksim.results.read_rows`)
    :param task: the task whose rows to show
    :param blocks: the ``block`` labels, in the order to show them
    :param title: the first line's name (default: the task)
    :output lines: ``"precoding: sum_rate at tx_power_dbw = -10 -> 10"``, then one line per block

    .. rubric:: Examples

    .. code-block:: python

        from linksim.campaigns import headline
        from linksim.results import read_rows
        for line in headline(read_rows("results/demo/precoding/results.csv"), "precoding", ["zf", "wmmse"]):
            print(line)        # precoding: sum_rate at tx_power_dbw = -10 -> 10 / zf  4.35 -> 26.5 / ...
    """
    from .chains import chain_class

    cls = chain_class(task)
    metric = cls.val_metric or next(iter(cls.new_metrics()))
    mine = [r for r in rows if r["task"] == task and r["metric"] == metric]
    if not mine:
        return []
    xs = sorted({float(r["x"]) for r in mine})
    value = {(r["block"], float(r["x"])): float(r["value"]) for r in mine}
    width = max(len(b) for b in blocks)
    lines = [f"{title or task}: {metric} at {mine[0]['x_name']} = {xs[0]:g} -> {xs[-1]:g}"]
    for b in blocks:
        ends = [f"{value[(b, x)]:.3g}" if (b, x) in value else "-" for x in (xs[0], xs[-1])]
        lines.append(f"  {b:<{width}}  {ends[0]} -> {ends[1]}")
    return lines
