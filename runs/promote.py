"""Move finished runs (runs/<name>, trained by runs/queue.sh) into agents/<name>, replacing the
agent trained by the older recipe, with its learning curve drawn; then point the quick paper
budget's roles at them (both training seeds where both are done) and retire the 300-step
ablation agents the common budget replaces.

    .venv/bin/python runs/promote.py            # what is finished; prints what it did
    .venv/bin/python runs/promote.py --dry-run

A run without [result] (still training, or not started) is left where it is.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# paper/quick.toml role -> run name (seed 0; "<name>-seed1" is the second training seed)
ROLES = {"llm_multi": "llm-multitask", "ablation": "llm-multitask", "llm_prediction": "llm-prediction",
         "llm_precoding": "llm-precoding", "llm_detection": "llm-detection", "nf4": "llm-nf4",
         "loftq": "llm-loftq", "random_init": "llm-random", "no_backbone": "llm-nobackbone",
         "single_prompt": "llm-detection", "single_noprompt": "llm-detection-noprompt"}
RETIRED = ("llm-multitask-300", "llm-nf4-300", "llm-loftq-300", "llm-random-300", "llm-nobackbone-300",
           "llm-detection-300", "llm-detection-noprompt-300")
KEEP = ("agent.toml", "model.safetensors", "adapter", "train_log.csv")


def finished(run: Path) -> bool:
    return (run / "agent.toml").is_file() and re.search(r"(?m)^\[result\]", (run / "agent.toml").read_text()) \
        is not None and (run / "model.safetensors").is_file()


def promote(run: Path, dry: bool) -> Path:
    from linksim.training.curves import plot_learning_curve

    dest = ROOT / "agents" / run.name
    print(f"{run.relative_to(ROOT)} -> {dest.relative_to(ROOT)}")
    if dry:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in KEEP:
        src = run / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    plot_learning_curve(dest)
    shutil.rmtree(run)
    return dest


def point_budget(dry: bool) -> None:
    path = ROOT / "paper" / "quick.toml"
    text = path.read_text()
    for role, name in ROLES.items():
        seeds = [f"agents/{n}" for n in (name, f"{name}-seed1") if (ROOT / "agents" / n / "model.safetensors").is_file()
                 and finished_agent(ROOT / "agents" / n)]
        if not seeds:
            continue
        value = f'"{seeds[0]}"' if len(seeds) == 1 else "[" + ", ".join(f'"{s}"' for s in seeds) + "]"
        text, n = re.subn(rf'(?m)^{role} = [^#\n]*?(\s*#.*)?$', lambda m: f"{role} = {value}" + (m.group(1) or ""), text)
        print(f"paper/quick.toml: {role} = {value}" if n else f"paper/quick.toml: no role {role}")
    if not dry:
        path.write_text(text)


def finished_agent(folder: Path) -> bool:
    """Trained by the common recipe (its agent.toml says so), not an older agent of that name."""
    return "common budget" in (folder / "agent.toml").read_text()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    for run in sorted(p for p in (ROOT / "runs").iterdir() if p.is_dir()):
        if finished(run):
            promote(run, a.dry_run)
    point_budget(a.dry_run)
    if all((ROOT / "agents" / n).is_dir() and finished_agent(ROOT / "agents" / n) for n in set(ROLES.values())):
        for old in RETIRED:
            if (ROOT / "agents" / old).is_dir():
                print(f"retire agents/{old}")
                if not a.dry_run:
                    shutil.rmtree(ROOT / "agents" / old)


if __name__ == "__main__":
    main()
