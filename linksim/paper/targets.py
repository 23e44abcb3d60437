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


def _first_below(curve: list[tuple[float, float]], level: float) -> float | None:
    return next((x for x, v in curve if v <= level), None)


def _worst(a: dict[float, float], b: dict[float, float], op, xs=None) -> tuple[float, float] | None:
    """``(x, op(a[x], b[x]))`` of the largest value over the points both curves have (``xs``: only
    those); None when they share none."""
    pts = [(x, op(a[x], b[x])) for x in sorted(a) if x in b and (xs is None or xs(x))]
    return max(pts, key=lambda p: p[1]) if pts else None


def _ratio(u: float, v: float) -> float:
    return u / v if v > 0 else math.inf


def _issue_targets(name: dict[str, str], cp: _Rows, pre: _Rows, pre_k: _Rows, det: _Rows) -> list[Check]:
    """The targets the training issue set for the quick budget (LLM vs the classical references,
    the small learned blocks vs theirs), each on the figures' curves (the first training seed)."""
    out = []
    llm = name.get("llm_multi", "")

    def add(claim, a, b, op, fmt, target, ok, xs=None):
        w = _worst(a, b, op, xs) if a and b else None
        if w is not None:
            out.append(Check(claim, fmt(*w), target, ok(w[1])))

    def nm(block):
        return cp.curve(block, "nmse_db")

    def ser(block):
        return det.curve(block, "ser")

    gap = lambda u, v: u - v                                              # noqa: E731
    add("LLM multi-task CP NMSE below AR at every speed (Fig 5)", nm(llm), nm("ar"), gap,
        lambda x, g: f"worst {g:+.2f} dB (at {x:g} km/h)", "< 0 dB", lambda g: g < 0)
    add("LLM multi-task CP NMSE below PAD from 60 km/h (Fig 5)", nm(llm), nm("pad"), gap,
        lambda x, g: f"worst {g:+.2f} dB (at {x:g} km/h)", "< 0 dB", lambda g: g < 0, xs=lambda x: x >= 60)
    small = [name[r] for r in ("rnn", "lstm", "gru", "transformer") if r in name]
    gaps = [(b, w) for b in small if (w := _worst(nm(b), nm("ar"), gap)) is not None]
    if gaps:
        b, (x, g) = min(gaps, key=lambda bw: bw[1][1])
        out.append(Check("best small learned predictor within 2 dB of AR at every speed (Fig 5)",
                         f"{b}: worst {g:+.2f} dB (at {x:g} km/h)", "≤ 2 dB", g <= 2.0))
    add("LLM multi-task SER at or below OAMP-Net at every SNR (Fig 10)", ser(llm), ser(name.get("oampnet", "")),
        _ratio, lambda x, r: f"worst SER ratio {r:.3f} (at {x:g} dB)", "≤ 1", lambda r: r <= 1.0)
    add("DNN SER below MF from 8 dB (Fig 10)", ser(name.get("dnn", "")), ser("mf"), _ratio,
        lambda x, r: f"worst SER ratio {r:.3f} (at {x:g} dB)", "< 1", lambda r: r < 1.0, xs=lambda x: x >= 8)
    add("LLM multi-task sum-rate at or above WMMSE at every power, K = 4 (Fig 7)",
        pre.curve("wmmse", "sum_rate"), pre.curve(llm, "sum_rate"), _ratio,
        lambda x, r: f"lowest LLM / WMMSE {1 / r:.4f} (at {x:g} dBW)", "≥ 1", lambda r: r <= 1.0)
    add("LLM multi-task sum-rate at least 99% of WMMSE at every K (Fig 8)",
        pre_k.curve("wmmse", "sum_rate"), pre_k.curve(llm, "sum_rate"), _ratio,
        lambda x, r: f"lowest LLM / WMMSE {1 / r:.4f} (at K = {x:g})", "≥ 0.99", lambda r: r <= 1 / 0.99)
    return out


def _seed_values(rows: _Rows, blocks: list[str], metric: str, x: float) -> list[float]:
    return [rows.v[(b, metric, x)] for b in blocks if (b, metric, x) in rows.v]


#: headline metrics where lower is better (the others: higher is better)
LOWER = ("nmse_db", "ser", "rmse_db", "pos_err_m", "pos_err_p90_m", "gain_loss_db")


def _universal_targets(out: Path, seeds: dict[str, list[str]]) -> list[Check]:
    """The universal study's targets (issue 19) on ``universal`` and ``universal_ablation``:
    every sensing task beats its best classical block and stays within 5% of its single-task
    agent; the papers' claims on the mechanisms, met / not met / not decidable at the seed spread."""
    from .items import UNI_HEADLINE, UNI_POINT, UNI_TASKS
    from .render import seed_verdict

    def values(data: str):
        path = out / data / "results.csv"
        rows = read_rows(path) if path.is_file() else []
        v = {(r["task"], r["block"], r["metric"]): float(r["value"]) for r in rows
             if float(r["x"]) == UNI_POINT.get(r["task"], ("", math.nan))[1]}
        return lambda task, blocks, metric: [v[(task, b, metric)] for b in blocks if (task, b, metric) in v]

    uni, abl = values("universal"), values("universal_ablation")
    found = []
    for task, (classical, _) in UNI_TASKS.items():
        metric = next(m for t, m, *_ in UNI_HEADLINE if t == task)
        sign = 1 if metric in LOWER else -1                    # sign * (a - b) < 0: a is better
        u = uni(task, seeds.get("universal", []), metric)
        single = uni(task, seeds.get(f"llm_{task}", []), metric)
        refs = {c: uni(task, [c], metric) for c in classical if uni(task, [c], metric)}
        if u and refs:
            best = min(refs, key=lambda c: sign * refs[c][0])
            d = float(np.mean(u)) - refs[best][0]
            found.append(Check(f"universal agent beats the best classical block on {task} ({metric})",
                               f"{np.mean(u):.3f} vs {best} {refs[best][0]:.3f}", "better", sign * d < 0))
        if u and single:
            rel = sign * (float(np.mean(u)) - float(np.mean(single))) / abs(float(np.mean(single)))
            found.append(Check(f"universal agent within 5% of its single-task agent on {task} ({metric})",
                               f"{rel:+.1%} (worse when positive)", "≤ 5%", rel <= 0.05))

    def verdict(role: str, cells) -> tuple[str, list[int]]:
        """Per (task, metric): +1 the mechanism helps beyond the seed spread, -1 it hurts, 0 undecided."""
        parts, signs = [], []
        for task, metric in cells:
            on, off = abl(task, seeds.get("universal", []), metric), abl(task, seeds.get(role, []), metric)
            if not on or not off:
                return "", []
            d, _, v = seed_verdict(on, off)
            helps = (d < 0) == (metric in LOWER)
            signs.append(0 if v != "decided" else 1 if helps else -1)
            parts.append(f"{task} {d:+.3g} ({v})")
        return "; ".join(parts), signs

    every = [(t, m) for t, m, *_ in UNI_HEADLINE]
    for claim, role, cells, rule in (
            ("learned prefixes help (AI2MMUM)", "uni_no_prefix", every, "any"),
            ("the modality gate helps beam selection (MMSense)", "uni_no_gate", [("beam", "top1_accuracy")], "any"),
            ("multi-layer attention helps regression (MMSense)", "uni_no_layers",
             [("pathloss", "rmse_db"), ("position", "pos_err_m")], "any"),
            ("multi-layer attention does not help classification (MMSense)", "uni_no_layers",
             [("los", "accuracy"), ("beam", "top1_accuracy")], "none")):
        text, signs = verdict(role, cells)
        if not signs:
            continue
        if rule == "any":
            state = "not met" if -1 in signs else "met" if 1 in signs else "not decidable"
        else:
            state = "not met" if 1 in signs else "met" if all(x == -1 for x in signs) else "not decidable"
        found.append(Check(claim + ": universal minus the ablation", f"{text} → {state}",
                           "met beyond the seed spread", state == "met"))
    return found


def checks(out: Path, roles) -> list[Check]:
    from .render import seed_verdict

    name = {r: Path(f[0]).name for r, f in roles.budget.agents.items()}
    seeds = {r: [Path(p).name for p in f] for r, f in roles.budget.agents.items()}
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
    out_checks += _issue_targets(name, cp, pre, _Rows(out, "fig8"), det)
    out_checks += _universal_targets(out, seeds)

    # Table I: LoftQ vs full precision vs plain 4-bit, over the training seeds
    ab = _Rows(out, "ablation")
    cells = {k: {r: _seed_values(ab, seeds.get(r, []), metric, x) for r in ("ablation", "loftq", "nf4")}
             for k, metric, x in (("cp", "nmse_db", 20.0), ("det", "nmse_db", 10.0), ("pre", "sum_rate", 0.0))}
    if all(v for c in cells.values() for v in c.values()):
        d_cp, sp_cp, v_cp = seed_verdict(cells["cp"]["loftq"], cells["cp"]["ablation"])
        r_pre = float(np.mean(cells["pre"]["loftq"]) / np.mean(cells["pre"]["ablation"]))
        out_checks.append(Check("LoftQ within 0.3 dB CP NMSE of full precision (Table I)",
                                f"{d_cp:+.2f} dB (seed spread {sp_cp:.2f}, {v_cp})", "≤ 0.3 dB", d_cp <= 0.3))
        out_checks.append(Check("LoftQ within 1% PRE sum-rate of full precision (Table I)",
                                f"ratio {r_pre:.4f}", "≥ 0.99", r_pre >= 0.99))
        parts, better = [], []
        for k, sign in (("cp", 1), ("det", 1), ("pre", -1)):
            d, _, verdict = seed_verdict(cells[k]["loftq"], cells[k]["nf4"])
            better.append(sign * d < 0 and verdict == "decided")
            parts.append(f"{k.upper()} {d:+.2f} ({verdict})")
        out_checks.append(Check("LoftQ better than plain 4-bit (NF4) on CP, DET and PRE, beyond the seed "
                                "spread (Table I)", "LoftQ − NF4: " + ", ".join(parts), "all three decided",
                                all(better)))

    # Fig 11: the instruction speeds convergence (single-task detection, with vs without prompt)
    tr = _Rows(out, "training")
    curves = {r: [c for b in seeds.get(r, []) if (c := sorted(tr.curve(b, "val_ser").items()))]
              for r in ("single_prompt", "single_noprompt")}
    if all(curves.values()):
        level = 1.1 * max(min(v for _, v in c) for cs in curves.values() for c in cs)
        reach = {r: [_first_below(c, level) for c in cs] for r, cs in curves.items()}
        if all(x is not None for xs in reach.values() for x in xs):
            d, _, verdict = seed_verdict(reach["single_prompt"], reach["single_noprompt"])
            out_checks.append(Check(
                "the prompt speeds convergence (Fig 11: training samples until the validation SER is "
                "within 10% of the worse variant's best, per seed)",
                f"prompt {', '.join(f'{x:g}' for x in reach['single_prompt'])}; no prompt "
                f"{', '.join(f'{x:g}' for x in reach['single_noprompt'])} ({verdict})",
                "fewer with the prompt, beyond the seed spread", d < 0 and verdict == "decided"))
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
