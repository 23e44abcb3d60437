"""Paper-style figures from a results directory: one figure per (task, metric, swept parameter)."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from .errors import LinksimError
from .registry import REFERENCE, block_names
from .results import read_rows

X_LABELS = {
    ("detection", "snr_db"): "SNR = 1/σ² [dB]  (unit-energy symbols, unit-gain channel)",
    ("coded", "snr_db"): "SNR = 1/σ² [dB]  (unit-energy symbols, unit-gain channel)",
    ("prediction", "snr_db"): "History SNR [dB]",
    ("loop", "snr_db"): "History SNR [dB]",
    ("precoding", "snr_db"): "P/σ² [dB]",
    "speed_kmh": "User speed [km/h]",
    "tx_power_dbw": "Transmit power P [dBW]",
    "num_users": "Number of users K",
}
Y_LABELS = {"ser": "Symbol error rate", "ber": "Bit error rate", "bler": "Block error rate",
            "nmse_db": "NMSE [dB]", "nmse_noisy_db": "NMSE vs noisy future [dB]", "sum_rate": "Sum-rate [bit/s/Hz]"}
LOG_Y = ("ser", "ber", "bler")
MARKERS = "osD^v<>phX*"


def place_legend(fig, ax, below: bool, **style) -> None:
    """Put the legend of ``ax`` inside the canvas, then lay ``fig`` out (``tight_layout``).

    ``below=False``: in the axes (matplotlib's best place). ``below=True`` (many curves): under the
    axes, never over a curve, centred on the figure in the most columns (3, 2 or 1) whose width
    fits the figure's; the figure grows by the legend's height, the axes keep theirs.

    :param fig: the matplotlib figure
    :param ax: its axes, with labelled curves
    :param below: legend under the axes instead of in them
    :param style: more ``legend`` options (e.g. ``fontsize=8``)

    .. rubric:: Examples

    .. code-block:: python

        fig, ax = plt.subplots(figsize=(5.0, 3.7))
        for k in range(9):
            ax.plot([0, 1], [k, k + 1], label=f"a long curve name {k}")
        place_legend(fig, ax, below=True)       # 2 columns, the figure now ~5.0 x 4.9 in
    """
    if not below:
        ax.legend(frameon=True, **style)
        fig.tight_layout()
        return
    handles, names = ax.get_legend_handles_labels()
    renderer = fig.canvas.get_renderer()
    for ncol in (3, 2, 1):
        leg = fig.legend(handles, names, ncol=ncol, loc="lower center", bbox_to_anchor=(0.5, 0.01),
                         frameon=False, **style)
        box = leg.get_window_extent(renderer)
        if box.width <= 0.98 * fig.bbox.width or ncol == 1:
            break
        leg.remove()
    extra = box.height / fig.dpi + 0.1                       # inches, with a margin
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + extra)
    fig.tight_layout(rect=(0, extra / (h + extra), 1, 1))


def undrawn(values: list[float], metric: str) -> str:
    """Why a curve none of whose ``values`` can be drawn is left out, for the figure's note:
    ``exact (−∞ dB)`` (a genie's NMSE), ``no errors (0)`` on a log axis, ``+∞``, or ``no value``
    (NaN).

    :param values: the curve's values (none finite, or none positive on a log axis)
    :param metric: the results.csv metric (``nmse_db``, ``ser``, ...)
    :output why: str

    .. rubric:: Examples

    .. code-block:: python

        from linksim.plots import undrawn
        undrawn([float("-inf")] * 4, "nmse_db")      # 'exact (−∞ dB)'
    """
    if all(v == -math.inf for v in values):
        return "exact (−∞ dB)" if metric.endswith("_db") else "−∞"
    if all(v == math.inf for v in values):
        return "+∞"
    if metric in LOG_Y and all(v == 0 for v in values):
        return "no errors (0)"
    return "no value"


def plot_dir(out: str | Path) -> list[Path]:
    """Write ``out/{task}_{metric}_vs_{x}.png`` and ``.pdf`` for every curve family in results.csv.

    Points that cannot be drawn (non-finite values, zero on a log axis) are left out; a curve
    with none left is not drawn at all (no empty legend entry) and the title says so, e.g.
    ``genie: exact (−∞ dB), not drawn`` in the loop's NMSE figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = set(block_names(REFERENCE))
    out = Path(out)
    csv = out / "results.csv"
    if not csv.is_file():
        raise LinksimError(f"{csv}: not found (run `linksim sweep ... --out {out}` first)")
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in read_rows(csv):
        groups[(r["task"], r["metric"], r["x_name"])][r["block"]].append(r)
    written = []
    for (task, metric, x_name), curves in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(5.2, 3.9))
        notes = []
        for i, (block, rows) in enumerate(sorted(curves.items())):
            rows = sorted(rows, key=lambda r: float(r["x"]))
            x = [float(r["x"]) for r in rows]
            y = [float(r["value"]) for r in rows]
            # a non-finite point (a genie's -inf dB), or a zero-error one on a log axis, cannot be drawn
            keep = [k for k, v in enumerate(y) if math.isfinite(v) and (v > 0 or metric not in LOG_Y)]
            if not keep:
                notes.append(f"{block}: {undrawn(y, metric)}, not drawn")
                continue
            lo = [max(0.0, yy - float(r["ci_low"])) for yy, r in zip(y, rows)]
            hi = [max(0.0, float(r["ci_high"]) - yy) for yy, r in zip(y, rows)]
            x, y, lo, hi = ([s[k] for k in keep] for s in (x, y, lo, hi))
            if metric in LOG_Y:
                lo = [min(lo_k, 0.999 * y_k) for lo_k, y_k in zip(lo, y)]
            ref = any(part in references for part in block.split("+"))   # limit curves: dashed
            ax.errorbar(x, y, yerr=[lo, hi], label=block, marker=MARKERS[i % len(MARKERS)],
                        linestyle="--" if ref else "-", color="k" if ref else None,
                        markersize=5, capsize=2, linewidth=1.4)
        if metric in LOG_Y:
            ax.set_yscale("log")
        ax.set_xlabel(X_LABELS.get((task, x_name), X_LABELS.get(x_name, x_name)))
        ax.set_ylabel(Y_LABELS.get(metric, metric))
        ax.set_title("\n".join([f"{task}: {Y_LABELS.get(metric, metric)}", *notes]), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        drawn = len(curves) - len(notes)
        if drawn:
            place_legend(fig, ax, below=drawn > 8, fontsize=8)
        else:
            fig.tight_layout()
        stem = out / f"{task}_{metric}_vs_{x_name}"
        for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
            fig.savefig(stem.with_suffix("." + ext), dpi=150, metadata=meta)   # the same bytes every run
            written.append(stem.with_suffix("." + ext))
        plt.close(fig)
    return written
