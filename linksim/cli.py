"""Command line: ``linksim {sweep,plot,list,dataset,train,paper,demo,baselines,llm}``. Bad input: one line, exit 2."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import LinksimError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise LinksimError(message)


def _speed(text: str | None):
    if text is None:
        return None
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        raise LinksimError(f"--speed-kmh {text!r}: expected V or LOW:HIGH in km/h") from None
    if len(parts) not in (1, 2) or min(parts) < 0:
        raise LinksimError(f"--speed-kmh {text!r}: expected V or LOW:HIGH, non-negative")
    return parts[0] if len(parts) == 1 else tuple(parts)


def cmd_sweep(a):
    from .plots import plot_dir
    from .sweep import sweep

    if a.over and len(a.over) > 1:
        raise LinksimError(f"--over given {len(a.over)} times ({', '.join(a.over)}): a sweep runs over "
                           "one parameter; run one sweep per parameter (into its own --out)")
    store = sweep(a.scenario, a.task, [b for b in a.blocks.split(",") if b], a.over and a.over[0], a.out,
                  progress=not a.quiet, backend=_backend(a))
    print(f"{store.csv} ({len(store.rows)} rows)")
    if a.plot:
        for p in plot_dir(a.out):
            print(p)


def cmd_plot(a):
    from .plots import plot_dir

    if (Path(a.dir) / "agent.toml").is_file():       # an agent folder: its learning curve
        from .training.curves import plot_learning_curve
        for p in plot_learning_curve(a.dir):
            print(p)
        return
    for p in plot_dir(a.dir):
        print(p)


def cmd_list(a):
    from . import blocks
    from .agents.spec import read_agent
    from .chains import SWEEP_PARAMS
    from .registry import ARCHS, KINDS, REFERENCE, TASKS

    for kind in KINDS:
        if kind == REFERENCE or not blocks.names(kind):
            continue
        print(f"{kind}s:")
        for n in blocks.names(kind):
            print(f"  {n:<12} {blocks.spec(n).doc}")
    print("reference blocks (limit curves; they see the truth):")
    for n in blocks.names(REFERENCE):
        print(f"  {n:<12} [{blocks.spec(n).serves}] {blocks.spec(n).doc}")
    print("agent architectures (agent.toml arch = ...; trained with `linksim train`):")
    for n, arch in sorted(ARCHS.items()):
        print(f"  {n:<12} [{', '.join(arch.tasks)}] {arch.doc}")
    print("tasks (--task; blocks of the kind shown):")
    for n, t in TASKS.items():
        kind = KINDS.get(t.kind, "") if t.kind == "loop" else f"{t.kind}s"
        print(f"  {n:<12} [{kind}] {t.doc}")
    print("sweep parameters: " + ", ".join(SWEEP_PARAMS))
    root = Path(a.scenarios)
    scenarios = sorted(root.glob("*.toml"))
    print(f"scenarios (*.toml in {root.resolve()}):")
    for p in scenarios:
        print(f"  {p}")
    if not scenarios:
        print(f"  none found{_missing(root)}; name the folder with --scenarios DIR (the repository's "
              "scenarios/ holds the shipped ones)")
    agents = sorted(Path(a.agents).glob("*/agent.toml"))
    print(f"agents (*/agent.toml in {Path(a.agents).resolve()}, use as agent:PATH):")
    if not agents:
        print(f"  none found{_missing(Path(a.agents))}; name the folder with --agents DIR (the "
              "repository's agents/ holds the shipped ones)")
    for p in agents:
        try:
            spec = read_agent(p.parent)
            state = "trained" if spec.weights.is_file() else "not trained (linksim train)"
            tasks = ", ".join(spec.tasks) or "every task of its arch"
            print(f"  agent:{p.parent}  {spec.arch} ({tasks}), {state}")
        except LinksimError as e:
            print(f"  agent:{p.parent}  unreadable: {e}")


def _missing(folder: Path) -> str:
    """`` (no such folder)`` when ``folder`` does not exist, for ``linksim list``'s hints."""
    return "" if folder.is_dir() else " (no such folder)"


def cmd_dataset(a):
    from .chains import chain_class
    from .channel.dataset import export_dataset
    from .scenario import load_scenario

    sc = load_scenario(a.scenario)
    try:
        task = chain_class(a.task)
    except LinksimError as e:
        raise LinksimError(f"--task: {e}") from None
    out = export_dataset(sc, a.n, a.out, num_users=task.num_users(sc), num_time=task.num_time(sc),
                         speed_kmh=_speed(a.speed_kmh), seed=a.seed, progress=not a.quiet,
                         attrs={"task": a.task})
    print(out)


def cmd_campaign(a):
    from .campaigns import run_campaign

    for p in run_campaign(a.command, a.scenario, a.out, progress=not a.quiet, backend=_backend(a),
                          report=print):
        print(p)


def cmd_paper(a):
    from .paper import run_paper

    t0 = time.time()
    for p in run_paper(a.budget, a.out, only=a.only, backbone=a.backbone, progress=not a.quiet,
                       backend=_backend(a)):
        print(p)
    print(f"linksim paper: {(time.time() - t0) / 60:.1f} min (resumed points and trained agents "
          f"skipped); the claims measured: {a.out}/targets.md", file=sys.stderr)


def cmd_train(a):
    from .training import train_agent
    from .training.guard import check_overwrite, trial_copy

    dirs = [trial_copy(d, a.out) for d in a.agent_dirs] if a.out else a.agent_dirs
    if len({Path(d).resolve() for d in dirs}) != len(dirs):
        raise LinksimError(f"train: {' '.join(a.agent_dirs)}: the same folder (or, with --out, the "
                           "same folder name) given twice")
    for d in dirs:                       # every folder before any training starts
        check_overwrite(d, a.force)
    for d in dirs:
        result = train_agent(d, steps=a.steps, resume=not a.restart, progress=not a.quiet,
                             overwrite=a.force)
        shown = {k: v for k, v in result.items() if k.startswith("val_") or k in ("steps", "wall_time_s")}
        print(f"{d}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))


def _backend_option(s) -> None:
    s.add_argument("--backend", default="local", help="where sweep points run: local (default: this "
                   "process, points in order) or ray (each point a Ray task: every local core, or a "
                   "cluster with --address; pip install 'linksim[ray]')")
    s.add_argument("--address", help="ray: a running cluster, HOST:6379 or auto (default: start a "
                   "local one)")
    s.add_argument("--workers", type=int, help="ray: most points at once (default: every CPU)")
    s.add_argument("--gpus-per-worker", type=float, help="ray: GPUs each point holds (e.g. 1, or 0.5 "
                   "to share one)")


def _backend(a):
    """The backend object of ``--backend`` and its options (only those given)."""
    from .sweep import get_backend

    given = {k: getattr(a, k) for k in ("address", "workers", "gpus_per_worker")
             if getattr(a, k) is not None}
    return get_backend(a.backend, **given)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="linksim", description="Link-level OFDM MU-MISO simulator (Sionna UMa, moving "
                "users) with swappable precoders, detectors and channel predictors.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("sweep", help="run blocks of one task over a parameter grid (resumable)")
    s.add_argument("scenario", help="scenario TOML file, e.g. scenarios/quick.toml")
    s.add_argument("--task", required=True, help="prediction, precoding, detection, loop, coded, or a "
                   "task a plugin registers (linksim list)")
    s.add_argument("--blocks", required=True, help="comma-separated block names, e.g. zf,rzf,wmmse")
    s.add_argument("--over", action="append", help="NAME=START:STOP:STEP (STOP included) or "
                   "NAME=V1,V2; NAME in snr_db, speed_kmh, tx_power_dbw, num_users; once (one "
                   "parameter per sweep)")
    s.add_argument("--out", required=True, help="output folder (results.csv, meta.json)")
    s.add_argument("--plot", action="store_true", help="also draw the figures")
    _backend_option(s)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("plot", help="draw DIR/*.png and DIR/*.pdf from DIR/results.csv, or an agent "
                       "folder's learning curve from its train_log.csv")
    s.add_argument("dir")
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("list", help="registered blocks, tasks and scenarios")
    s.add_argument("--scenarios", default="scenarios", help="folder of scenario files")
    s.add_argument("--agents", default="agents", help="folder of agent folders")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("dataset", help="export channels of a task to HDF5")
    s.add_argument("scenario")
    s.add_argument("--task", required=True, help="the task whose channels to export (prediction, "
                   "precoding, detection, loop, ...): its users and time samples")
    s.add_argument("--n", type=int, required=True, help="number of drops")
    s.add_argument("--out", required=True, help="output .h5 file")
    s.add_argument("--speed-kmh", help="V or LOW:HIGH (uniform per user); default: the scenario's")
    s.add_argument("--seed", type=int, help="default: the scenario's run.seed")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_dataset)

    s = sub.add_parser("train", help="train the agent(s) described by AGENT_DIR/agent.toml")
    s.add_argument("agent_dirs", nargs="+", metavar="AGENT_DIR")
    s.add_argument("--steps", type=int, help="override train.steps (e.g. a short trial)")
    s.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    s.add_argument("--out", help="train a copy of each agent in OUT/<name> (e.g. a short trial); the "
                   "given folders stay as they are")
    s.add_argument("--force", action="store_true", help="retrain an agent that is already trained, "
                   "replacing its weights (refused without it)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("paper", help="the paper's figures and tables (+ real-link results) in one run "
                       "(resumable; trains missing agents)")
    s.add_argument("--budget", default="quick", help="paper/<BUDGET>.toml: quick (2 CPU cores, shipped "
                   "agents) or paper (the paper's sizes; for a GPU)")
    s.add_argument("--out", default="results/paper", help="output folder (default: results/paper)")
    s.add_argument("--only", help="comma-separated items, e.g. fig7,table1 (default: all)")
    s.add_argument("--backbone", help="add this LLM (a folder, .gguf or cached hub id) to Table II: "
                   "the ablation recipe is trained on it into OUT/agents/")
    _backend_option(s)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=cmd_paper)

    for name, helptext in (("demo", "the classical blocks on the quick scenario, with figures"),
                           ("baselines", "classical and trained baselines (agents/), with figures"),
                           ("llm", "the multi-task LLM agent beside every baseline, with figures")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--scenario", default="scenarios/quick.toml")
        s.add_argument("--out", default=f"results/{name}")
        _backend_option(s)
        s.add_argument("--quiet", action="store_true")
        s.set_defaults(func=cmd_campaign)
    return p


#: what an interrupted command kept, by command (the rest: finished points are kept)
_INTERRUPTED = {
    "dataset": "nothing was written (the partial file was removed); re-run the command to start over",
    "train": "the last checkpoint is kept; re-run the command to resume from it",
    "plot": "some figures may be missing; re-run the command",
    "list": "",
}


def main(argv=None) -> int:
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except LinksimError as e:
        print(f"linksim: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unreadable/unwritable paths
        print(f"linksim: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = _INTERRUPTED.get(getattr(args, "command", "list"),
                                "finished points are saved; re-run the command to resume")
        print("linksim: interrupted" + (f"; {kept}" if kept else ""), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
