"""Figures (PNG + PDF + the CSV rows they show), Markdown tables and ``OUT/README.md``, all read from
the data folders' ``results.csv``: nothing here computes a metric."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from ..errors import LinksimError
from ..plots import X_LABELS, Y_LABELS, place_legend
from ..results import COLUMNS, atomic_write, read_rows
from .items import DATA, FIGURES, TABLES, Figure, Table

NAMES = {"outdated": "Outdated CSI", "ar": "AR (per-sample LS)", "pad": "PAD (Prony)",
         "wiener": "Wiener (pool statistics)", "genie": "Genie CSI", "zf": "ZF", "wmmse": "WMMSE",
         "wmmse_best": "WMMSE best of N", "dpc_bound": "DPC bound", "lmmse": "LMMSE", "kbest": "K-Best",
         "zf_det": "ZF", "mrt": "MRT", "rzf": "RZF"}
ROLES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "transformer": "Transformer", "cnn": "CNN",
         "cnn_padded": "CNN (zero-padded to K = 8)",
         "dnn": "DNN", "detnet": "DetNet", "oampnet": "OAMP-Net", "best_predictor": "best learned",
         "llm_multi": "LLM multi-task", "llm_prediction": "LLM single-task",
         "llm_precoding": "LLM single-task", "llm_detection": "LLM single-task",
         "ablation": "LLM full precision", "loftq": "LLM LoftQ 4-bit", "nf4": "LLM NF4 4-bit",
         "random_init": "LLM random init", "no_backbone": "no backbone",
         "single_prompt": "single-task, prompt", "single_noprompt": "single-task, no prompt",
         "backbone": "user backbone"}
LIMITS = {"dpc_bound": "--", "genie": "--", "wmmse_best": ":", "kbest": "-."}   # references: grey, own dashes
EXTRA_X = {("training", "samples"): "Training samples seen (detection)"}
EXTRA_Y = {"val_ser": "Validation SER"}
MARKERS = "osD^v<>phX*P"


def display(block: str, labels: dict[str, str], overrides: dict | None = None,
            seeds: dict[str, int] | None = None) -> str:
    """A CSV block label as the legend shows it (``ar+wmmse`` -> ``AR (per-sample LS) + WMMSE``;
    an agent of a role's second training seed gets `` (seed 2)``)."""
    names = ROLES | dict(overrides or {})
    out = []
    for part in block.split("+"):
        role = labels.get(part)
        text = names.get(role, role) if role else NAMES.get(part, part)
        if seeds and seeds.get(part, 0) > 0:
            text += f" (seed {seeds[part] + 1})"
        out.append(text)
    return " + ".join(out)


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _rows(out: Path, data: str) -> list[dict]:
    path = out / data / "results.csv"
    if not path.is_file():
        raise LinksimError(f"{path}: not found (run `linksim paper` without --only, or with the item)")
    return read_rows(path)


def render_figure(fig: Figure, out: Path, labels: dict[str, str], seeds: dict[str, int] | None = None) -> list[Path]:
    """``OUT/<fig>.csv`` (its rows), ``.png`` and ``.pdf``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (integer ticks for K and steps)

    rows = [r for r in _rows(out, fig.data)
            if r["task"] == fig.task and r["metric"] == fig.metric and r["x_name"] == fig.x_name]
    if not rows:
        raise LinksimError(f"{out / fig.data / 'results.csv'}: no {fig.metric} rows over {fig.x_name} for {fig.name}")
    curves: dict[str, list] = defaultdict(list)
    for r in rows:
        curves[r["block"]].append(r)
    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7.5,
                         "svg.hashsalt": "linksim", "pdf.compression": 6})
    fig_, ax = plt.subplots(figsize=(5.0, 3.7))
    for i, (block, rs) in enumerate(sorted(curves.items(), key=lambda kv: _order(kv[0], labels))):
        rs = sorted(rs, key=lambda r: float(r["x"]))
        x = [float(r["x"]) for r in rs]
        y = [float(r["value"]) for r in rs]
        lo = [max(0.0, v - float(r["ci_low"])) for v, r in zip(y, rs)]
        hi = [max(0.0, float(r["ci_high"]) - v) for v, r in zip(y, rs)]
        if fig.log_y:
            keep = [k for k, v in enumerate(y) if v > 0]
            x, y, lo, hi = ([s[k] for k in keep] for s in (x, y, lo, hi))
            lo = [min(a, 0.999 * b) for a, b in zip(lo, y)]
        limit = any(p in LIMITS for p in block.split("+"))
        llm = "llm" in block
        dash = next((LIMITS[p] for p in block.split("+") if p in LIMITS), "-")
        style = dict(label=display(block, labels, dict(fig.labels), seeds), linestyle=dash,
                     linewidth=2.0 if llm else 1.3, markersize=4.5,
                     marker=MARKERS[i % len(MARKERS)], capsize=2)
        if limit:
            style["color"] = "0.25"
        ax.errorbar(x, y, yerr=[lo, hi], **style)
    if fig.log_y:
        ax.set_yscale("log")
    if fig.x_name in ("num_users", "samples"):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel(EXTRA_X.get((fig.task, fig.x_name)) or X_LABELS.get((fig.task, fig.x_name))
                  or X_LABELS.get(fig.x_name, fig.x_name))
    ax.set_ylabel(EXTRA_Y.get(fig.metric) or Y_LABELS.get(fig.metric, fig.metric))
    ax.set_title(fig.title)
    ax.grid(True, which="both", alpha=0.3)
    place_legend(fig_, ax, below=len(curves) > 6)
    stem = out / fig.name
    atomic_write(stem.with_suffix(".csv"), _csv_text(sorted(rows, key=lambda r: (r["block"], float(r["x"])))))
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        fig_.savefig(stem.with_suffix("." + ext), dpi=160, metadata=meta)
    plt.close(fig_)
    return [stem.with_suffix(e) for e in (".csv", ".png", ".pdf")]


def _order(block: str, labels: dict[str, str]):
    """Classical first, then learned, then the LLM agents, limits last."""
    limit = any(p in LIMITS for p in block.split("+"))
    return (limit, "llm" in block, block in labels or "+" in block and block.split("+")[0] in labels, block)


def table_cells(table: Table, out: Path, roles) -> tuple[list[str], list[list[str]], list[dict]]:
    """(header, rows of formatted cells, the CSV rows used) of ``table``: a cell is the value of
    its row's agent, or the mean ± half the range over the role's training seeds."""
    header, body, used, _ = _table_values(table, out, roles)
    return header, body, used


def _table_values(table: Table, out: Path, roles):
    """:func:`table_cells` and, per shown row, ``(title, [values per seed] per column)``."""
    index = {}
    for data in {table.data} | {c.data for c in table.columns if c.data}:
        for r in _rows(out, data):
            index[(data, r["task"], r["block"], r["metric"], r["x_name"], float(r["x"]))] = r
    labels = roles.labels()
    header = ["block"] + [c.header for c in table.columns]
    body, used, values = [], [], []
    for spec in table.rows:
        cells, names, vals = [], [], []
        for c in table.columns:
            role = f"@llm_{c.task}" if spec == "@llm_single" else spec
            blocks = roles.blocks(role, seeds=True)
            if not blocks:           # the absent user backbone
                break
            found = []
            for block in blocks:
                name = "+".join(Path(p[6:]).name if p.startswith("agent:") else p for p in block.split("+"))
                if name not in names:
                    names.append(name)
                r = index.get((c.data or table.data, c.task, name, c.metric, c.x_name, float(c.x)))
                if r is not None:
                    used.append(r)
                    found.append(float(r["value"]))
            vals.append(found)
            cells.append(_cell(found, c.digits))
        if len(cells) < len(table.columns):
            continue
        role = spec[1:] if spec.startswith("@") and spec != "@llm_single" else None
        title = "LLM single-task" if spec == "@llm_single" else \
            ROLES.get(role) if role in ROLES else display(names[0], labels)
        body.append([f"{title} (`{', '.join(names)}`)"] + cells)
        values.append((title, vals))
    return header, body, used, values


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, half = sum(values) / len(values), (max(values) - min(values)) / 2
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def seed_verdict(row: list[float], ref: list[float]) -> tuple[float, float, str]:
    """(difference of the means, seed-to-seed spread, verdict) of a row against the reference row.

    The spread is the mean of the two rows' seed ranges (max − min). A difference is *decided*
    only when both rows have two or more seeds and their ranges do not overlap (every seed of one
    lies beyond every seed of the other); otherwise it is within the spread, or rests on one seed.

    >>> d, spread, verdict = seed_verdict([-12.0, -11.8], [-11.0, -11.2])
    >>> round(d, 2), round(spread, 2), verdict
    (-0.8, 0.2, 'decided')
    """
    d = sum(row) / len(row) - sum(ref) / len(ref)
    spread = ((max(row) - min(row)) + (max(ref) - min(ref))) / 2
    if len(row) < 2 or len(ref) < 2:
        return d, spread, "one seed"
    apart = min(row) > max(ref) or max(row) < min(ref)
    return d, spread, "decided" if apart else "within spread"


def _differences(table: Table, values) -> list[str]:
    """Markdown lines: each later row minus the first, per column, beside the seed spread."""
    if len(values) < 2 or all(len(v) < 2 for _, vals in values for v in vals):
        return []
    ref_title, ref = values[0]
    lines = [f"Differences to {ref_title} (mean over seeds; spread: the mean of the two rows' "
             "seed ranges; decided only when the seed ranges do not overlap):", "",
             "| vs " + ref_title + " | " + " | ".join(c.header for c in table.columns) + " |",
             "|" + "---|" * (len(table.columns) + 1)]
    for title, vals in values[1:]:
        cells = []
        for c, v, r in zip(table.columns, vals, ref):
            if not v or not r:
                cells.append("—")
                continue
            d, spread, verdict = seed_verdict(v, r)
            mark = f"**{verdict}**" if verdict == "decided" else verdict
            cells.append(f"{d:+.{c.digits}f} (spread {spread:.{c.digits}f}, {mark})")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines + [""]


def render_table(table: Table, out: Path, roles) -> list[Path]:
    """``OUT/<table>.md`` and ``OUT/<table>.csv`` (the rows its cells show)."""
    header, body, used, values = _table_values(table, out, roles)
    md = [f"**{table.name}: {table.title}**", "", "| " + " | ".join(header) + " |",
          "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]
    notes = _column_notes(table)
    text = "\n".join(md) + "\n\n" + "\n".join(_differences(table, values)) + notes + "\n"
    atomic_write(out / f"{table.name}.md", text)
    atomic_write(out / f"{table.name}.csv", _csv_text(used))
    return [out / f"{table.name}.md", out / f"{table.name}.csv"]


def _column_notes(table: Table) -> str:
    parts = []
    for c in table.columns:
        if c.task == "training":
            parts.append(f"{c.header}: {c.metric} at {c.x_name} = {c.x:g}")
        else:
            parts.append(f"{c.header}: {c.task} {c.metric} at {c.x_name} = {c.x:g}")
    folders = list(dict.fromkeys(c.data or table.data for c in table.columns))
    return "Cells: " + "; ".join(parts) + " (rows of " + ", ".join(f"`{d}/results.csv`" for d in folders) + ")."


PAPER_NUMBERS = """## Where our numbers and the paper's differ, and why

The paper's Tables I and II (Zheng & Dai, arXiv 2412.20772; DET NMSE there is linear, converted here):

| paper's agent | CP NMSE [dB] | DET NMSE | PRE sum-rate [bit/s/Hz] |
|---|---|---|---|
| LLaMA-2 7B, full precision | -16.37 | 0.0322 (-14.9 dB) | 29.37 |
| LLaMA-2 7B, LoftQ 4-bit | -16.25 | 0.0363 (-14.4 dB) | 29.36 |
| LLaMA-2 7B, plain 4-bit | -15.68 | 0.0528 (-12.8 dB) | 28.60 |
| GPT-2 | -15.39 | 0.0573 (-12.4 dB) | 29.04 |
| no backbone | -13.49 | 0.1908 (-7.2 dB) | 27.30 |

Compare shapes and orderings, not absolute values:
- **Channel generator.** Sionna's TR 38.901 UMa keeps a drop's rays fixed and rotates each by its
  Doppler phase, so every coefficient over 20 samples is a sum of complex exponentials: per-sample
  AR and Prony predictors are near-optimal here, and the LLM's CP head corrects `ar`'s own filter.
- **Array size.** `--budget quick` uses a 4x4 UPA (16 antennas) and K = 4; the paper 128 antennas
  (`--budget paper`), which raises every sum-rate and lowers the detection NMSE.
- **Backbone and budget.** SmolLM2-135M (first 6 layers, LoRA r=16) trained 2000 steps on one CPU
  core (the ablations 300 steps), against LLaMA-2 7B on GPUs.
- **Metrics.** SER over complex symbols, NMSE as a ratio of sums over a point's drops, rate in
  bit/s/Hz on the true channel; the authors' script counts 8 slots where there are 6, pairs real and
  imaginary parts of different users, and adds noise with an SNR offset. CP NMSE is against the clean
  future (`nmse_noisy_db` in fig5.csv: against a noisy future, LLM4CP's convention).
"""


def render_readme(out: Path, budget, roles) -> Path:
    """``OUT/README.md``: every figure and table present in OUT, with the paper's counterpart."""
    lines = [f"# linksim paper — budget `{budget.name}`", "",
             f"Scenario `{budget.scenario}`; agents per `{budget.path}`. Every number comes from the "
             "`results.csv` of a data folder here (`meta.json` beside it: scenario, versions, seed, "
             "wall time); figures and tables only select rows. Re-running the command resumes.", ""]
    targets = out / "targets.md"
    if targets.is_file():
        lines += [targets.read_text().strip(), ""]
    lines += [PAPER_NUMBERS, ""]
    for t in TABLES:
        md = out / f"{t.name}.md"
        if md.is_file():
            lines += [md.read_text().strip(), ""] + ([f"*Paper:* {t.paper}", ""] if t.paper else [])
    for f in FIGURES:
        png = out / f"{f.name}.png"
        if png.is_file():
            lines += [f"## {f.name}: {f.title}", "", f"![{f.name}]({f.name}.png)", "",
                      f"Data: [`{f.name}.csv`]({f.name}.csv) (PDF: [`{f.name}.pdf`]({f.name}.pdf))."
                      + (f" *Paper:* {f.paper}." if f.paper else ""), ""]
    path = out / "README.md"
    atomic_write(path, "\n".join(lines).rstrip() + "\n")
    return path
