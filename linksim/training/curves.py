"""Learning curves: an agent's validation metric against the training samples it has seen, with
each classical reference as a horizontal line, read from its ``train_log.csv`` (``linksim plot
AGENT_DIR``)."""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from ..agents.spec import read_agent
from ..chains import chain_class
from ..errors import LinksimError, read_text

LOG_Y = ("ser", "ber")
LABELS = {"nmse_db": "NMSE [dB]", "ser": "Symbol error rate", "sum_rate": "Sum-rate [bit/s/Hz]"}


def read_curves(folder: str | Path) -> dict:
    """The validation curves of an agent folder.

    :param folder: an agent folder with ``agent.toml`` and ``train_log.csv``
    :output curves: task -> ``{"metric": name, "samples": [n, ...], "values": [v, ...],
        "references": {block: value}, "kept": n}``, samples counted as steps x the task's batch
        size, ``kept`` the samples at the weights the agent kept (``[result] best_step``; agents
        trained before best checkpoints kept their last step); a log without a ``task`` column
        (one task) is read as the agent's task
    """
    spec = read_agent(folder)
    log = Path(folder) / "train_log.csv"
    if not log.is_file():
        raise LinksimError(f"{log}: not found (train the agent first: linksim train {folder})")
    from ..agents import agent_tasks
    tasks = agent_tasks(spec)
    rows = list(csv.DictReader(read_text(log).splitlines()))
    out = {}
    for task in tasks:
        metric = chain_class(task).val_metric
        size = spec.train.batch_sizes.get(task, spec.train.batch_size)
        name, prefix = f"val_{metric}", f"val_{metric}_"
        references = set(chain_class(task).references)
        points, refs = defaultdict(float), {}
        for r in rows:
            if r.get("task", task) != task or not r.get("metric"):
                continue
            try:
                step, value = int(r["step"]), float(r["value"])
            except ValueError:
                raise LinksimError(f"{log}: line with step={r.get('step')!r} value={r.get('value')!r} is "
                                   "not a number") from None
            if r["metric"] == name:
                points[step * size] = value
            elif r["metric"].startswith(prefix) and r["metric"][len(prefix):] in references:
                refs[r["metric"][len(prefix):]] = value
        samples = sorted(points)
        kept = spec.result.get("best_step", spec.result.get("steps", 0)) * size
        out[task] = {"metric": metric, "samples": samples, "values": [points[s] for s in samples],
                     "references": refs, "kept": kept if kept in points else (samples[-1] if samples else 0)}
    return out


def plot_learning_curve(folder: str | Path) -> list[Path]:
    """Write ``FOLDER/learning_curve.png`` and ``.pdf``: one panel per task, the validation metric
    vs samples seen, the classical references dashed, the validation of the kept weights marked.

    .. rubric:: Examples

    .. code-block:: python

        from linksim.training.curves import plot_learning_curve
        plot_learning_curve("agents/oampnet")   # [.../learning_curve.png, .../learning_curve.pdf]
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_curves(folder)
    folder = Path(folder)
    fig, axes = plt.subplots(1, len(curves), figsize=(4.6 * len(curves), 3.6), squeeze=False)
    for ax, (task, c) in zip(axes[0], curves.items()):
        x, y = c["samples"], c["values"]
        log = c["metric"] in LOG_Y
        keep = [i for i, v in enumerate(y) if math.isfinite(v) and (v > 0 or not log)]
        ax.plot([x[i] for i in keep], [y[i] for i in keep], "o-", color="C0", markersize=3,
                label=f"{folder.name} (validation)")
        if c["kept"] in x:
            i = x.index(c["kept"])
            ax.plot([x[i]], [y[i]], "*", color="C3", markersize=11, label="kept weights")
        for j, (ref, v) in enumerate(sorted(c["references"].items())):
            if math.isfinite(v) and (v > 0 or not log):
                ax.axhline(v, linestyle="--", color=f"C{j + 1}", linewidth=1.1, label=ref)
        if log:
            ax.set_yscale("log")
        ax.set_xscale("log" if x and x[0] > 0 and x[-1] / x[0] > 50 else "linear")
        ax.set_xlabel("Training samples seen")
        ax.set_ylabel(LABELS.get(c["metric"], c["metric"]))
        ax.set_title(f"{task}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    written = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        path = folder / f"learning_curve.{ext}"
        fig.savefig(path, dpi=150, metadata=meta)
        written.append(path)
    plt.close(fig)
    return written
