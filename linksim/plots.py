"""Paper-style figures from a results directory: one figure per (task, metric, swept parameter)."""
from __future__ import annotations

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


def plot_dir(out: str | Path) -> list[Path]:
    """Write ``out/{task}_{metric}_vs_{x}.png`` and ``.pdf`` for every curve family in results.csv."""
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
        for i, (block, rows) in enumerate(sorted(curves.items())):
            rows = sorted(rows, key=lambda r: float(r["x"]))
            x = [float(r["x"]) for r in rows]
            y = [float(r["value"]) for r in rows]
            lo = [max(0.0, yy - float(r["ci_low"])) for yy, r in zip(y, rows)]
            hi = [max(0.0, float(r["ci_high"]) - yy) for yy, r in zip(y, rows)]
            if metric in LOG_Y:   # a zero-error point cannot be drawn on a log axis
                keep = [k for k, v in enumerate(y) if v > 0]
                x, y, lo, hi = ([s[k] for k in keep] for s in (x, y, lo, hi))
                lo = [min(lo_k, 0.999 * y_k) for lo_k, y_k in zip(lo, y)]
            ref = any(part in references for part in block.split("+"))   # limit curves: dashed
            ax.errorbar(x, y, yerr=[lo, hi], label=block, marker=MARKERS[i % len(MARKERS)],
                        linestyle="--" if ref else "-", color="k" if ref else None,
                        markersize=5, capsize=2, linewidth=1.4)
        if metric in LOG_Y:
            ax.set_yscale("log")
        ax.set_xlabel(X_LABELS.get((task, x_name), X_LABELS.get(x_name, x_name)))
        ax.set_ylabel(Y_LABELS.get(metric, metric))
        ax.set_title(f"{task}: {Y_LABELS.get(metric, metric)}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        stem = out / f"{task}_{metric}_vs_{x_name}"
        for ext in ("png", "pdf"):
            fig.savefig(stem.with_suffix("." + ext), dpi=150)
            written.append(stem.with_suffix("." + ext))
        plt.close(fig)
    return written
