"""The paper's claims as checks on the data folders' CSVs (``OUT/targets.md``): each claim, the
numbers it rests on, the target and whether it is met. Nothing is re-measured; a claim whose rows are
missing (``--only`` ran other items) is skipped."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..results import atomic_write, read_rows


@dataclass
class Check:
    claim: str
    measured: str
    target: str
    met: bool


class _Rows:
    """``(block, metric, x) -> value`` of one data folder (empty when the folder has no CSV)."""

    def __init__(self, out: Path, data: str):
        path = out / data / "results.csv"
        rows = read_rows(path) if path.is_file() else []
        self.v = {(r["block"], r["metric"], float(r["x"])): float(r["value"]) for r in rows}

    def curve(self, block: str, metric: str) -> dict[float, float]:
        return {x: v for (b, m, x), v in self.v.items() if b == block and m == metric}


def snr_gap_db(worse: dict[float, float], ref: dict[float, float]) -> float:
    """Largest SNR shift (dB) ``worse`` needs to reach ``ref``'s error rate: for each point of
    ``worse``, the SNR at which ``ref``'s curve (piecewise linear in log10 error rate vs SNR) has
    the same error rate, minus the point's SNR; points outside ``ref``'s range are skipped.

    >>> snr_gap_db({0.0: 1e-1, 10.0: 1e-2}, {0.0: 1e-1, 10.0: 1e-3})   # ref falls twice as fast
    5.0
    """
    xs = sorted(x for x, v in ref.items() if v > 0)
    if len(xs) < 2:
        return float("nan")
    lr = np.log10([ref[x] for x in xs])              # decreasing in SNR for an error rate
    gaps = []
    for x, v in worse.items():
        if v <= 0 or not lr.min() <= math.log10(v) <= lr.max():
            continue
        at = float(np.interp(-math.log10(v), -lr, xs))  # np.interp needs increasing abscissae
        gaps.append(x - at)
    return max(gaps) if gaps else float("nan")


def _first_below(curve: list[tuple[int, float]], level: float) -> int | None:
    return next((s for s, v in curve if v <= level), None)


def _smoothed(rows: _Rows, block: str, metric: str, n: int) -> list[tuple[int, float]]:
    c = sorted(rows.curve(block, metric).items())
    if len(c) < n:
        return []
    v = np.convolve([y for _, y in c], np.ones(n) / n, mode="valid")
    return [(int(c[i + n - 1][0]), float(y)) for i, y in enumerate(v)]


def checks(out: Path, roles) -> list[Check]:
    name = {r: Path(f).name for r, f in roles.budget.agents.items()}
    out_checks: list[Check] = []

    # multi-task vs single-task agents of the same steps (figs 5, 7, 10)
    cp, pre, det = _Rows(out, "fig5"), _Rows(out, "fig7"), _Rows(out, "detection")
    m, s = cp.curve(name.get("llm_multi", ""), "nmse_db"), cp.curve(name.get("llm_prediction", ""), "nmse_db")
    if m and s:
        gap = max(m[x] - s[x] for x in m if x in s)
        out_checks.append(Check("multi-task CP NMSE within 0.5 dB of single-task (every speed, Fig 5)",
                                f"worst gap {gap:+.2f} dB", "≤ 0.5 dB", gap <= 0.5))
    m, s = pre.curve(name.get("llm_multi", ""), "sum_rate"), pre.curve(name.get("llm_precoding", ""), "sum_rate")
    if m and s:
        ratio = min(m[x] / s[x] for x in m if x in s)
        out_checks.append(Check("multi-task sum-rate within 2% of single-task (every power, Fig 7)",
                                f"worst ratio {ratio:.3f}", "≥ 0.98", ratio >= 0.98))
    m, s = det.curve(name.get("llm_multi", ""), "ser"), det.curve(name.get("llm_detection", ""), "ser")
    if m and s:
        gap = snr_gap_db(m, s)
        if not math.isnan(gap):
            out_checks.append(Check("multi-task SER within 0.5 dB of single-task (SNR gap, Fig 10)",
                                    f"worst gap {gap:+.2f} dB", "≤ 0.5 dB", gap <= 0.5))

    # Table I: LoftQ vs full precision vs plain 4-bit
    ab = _Rows(out, "ablation")
    fp, lq, nf = name.get("ablation"), name.get("loftq"), name.get("nf4")
    cells = {k: {b: ab.v.get((b, metric, x)) for b in (fp, lq, nf)}
             for k, metric, x in (("cp", "nmse_db", 20.0), ("det", "nmse_db", 10.0), ("pre", "sum_rate", 0.0))}
    if all(v is not None for c in cells.values() for v in c.values()):
        d_cp = cells["cp"][lq] - cells["cp"][fp]
        r_pre = cells["pre"][lq] / cells["pre"][fp]
        out_checks.append(Check("LoftQ within 0.3 dB CP NMSE of full precision (Table I)",
                                f"{d_cp:+.2f} dB", "≤ 0.3 dB", d_cp <= 0.3))
        out_checks.append(Check("LoftQ within 1% PRE sum-rate of full precision (Table I)",
                                f"ratio {r_pre:.4f}", "≥ 0.99", r_pre >= 0.99))
        better = [cells["cp"][lq] < cells["cp"][nf], cells["det"][lq] < cells["det"][nf],
                  cells["pre"][lq] > cells["pre"][nf]]
        out_checks.append(Check(
            "LoftQ better than plain 4-bit (NF4) on CP, DET and PRE (Table I)",
            f"CP {cells['cp'][lq]:.2f} vs {cells['cp'][nf]:.2f} dB, DET {cells['det'][lq]:.2f} vs "
            f"{cells['det'][nf]:.2f} dB, PRE {cells['pre'][lq]:.2f} vs {cells['pre'][nf]:.2f}",
            "all three", all(better)))

    # Fig 11: the instruction speeds convergence (single-task detection, with vs without prompt)
    tr = _Rows(out, "training")
    a = _smoothed(tr, name.get("single_prompt", ""), "loss_detection", 25)
    b = _smoothed(tr, name.get("single_noprompt", ""), "loss_detection", 25)
    if a and b:
        level = 1.1 * max(a[-1][1], b[-1][1])
        sa, sb = _first_below(a, level), _first_below(b, level)
        out_checks.append(Check(
            "the prompt speeds convergence (Fig 11: steps until the smoothed loss is within 10% of "
            "the higher final loss)", f"prompt {sa} steps, no prompt {sb} steps (mean smoothed loss "
            f"{np.mean([v for _, v in a]):.4f} vs {np.mean([v for _, v in b]):.4f})",
            "fewer with the prompt", sa is not None and sb is not None and sa < sb))
    return out_checks


def render_targets(out: Path, roles) -> Path:
    """``OUT/targets.md``: the paper's claims as measured here (a function of the CSVs only, so a
    resumed run writes the same file; wall times are in each data folder's ``meta.json``)."""
    lines = ["## The paper's claims, measured here", "",
             "| claim | measured | target | met |", "|---|---|---|---|"]
    for c in checks(out, roles):
        lines.append(f"| {c.claim} | {c.measured} | {c.target} | {'yes' if c.met else '**no**'} |")
    path = out / "targets.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path


__all__ = ["Check", "checks", "render_targets", "snr_gap_db"]
