"""`linksim paper --only universal` on a miniature budget: tiny agents for every role (the universal
agent with every mechanism on, its ablations, single-task LLM agents and small networks of the four
sensing tasks), the seven tables written with cells equal to the CSV rows they cite, and the
modality-dropout folders zeroing what they say."""
import json
import re
from pathlib import Path

import pytest

from linksim import load_scenario
from linksim.paper import TABLES, parse_only, run_paper
from linksim.paper.items import DATA, UNI_DROPPED, UNI_TASKS, groups
from linksim.results import read_rows

SENSING = "\n".join(f'[{t}]\nnum_users = 2\nnum_samples = 4\nmodalities = "{m},gnss,rsrp"\n{extra}'
                    for t, m, extra in (("los", "csi", ""), ("beam", "csi_history", "history = 2\nhorizon = 1\n"
                                                                 "oversampling = 1\n"),
                                        ("pathloss", "csi", ""), ("position", "csi", "")))
SCENARIO = f"""name = "universal-tiny"
[channel]
bs_rows = 2
bs_cols = 4
[prediction]
num_users = 2
num_samples = 4
[precoding]
num_users = 2
num_samples = 4
[detection]
num_users = 2
min_samples = 4
max_samples = 4
target_errors = 10
{SENSING}
[run]
batch_size = 4
"""
ALL = '["prediction", "precoding", "detection", "los", "beam", "pathloss", "position"]'
TINY_LLM = """[model.heads.prediction]
base = "outdated"
[model.backbone]
source = "tiny"
layers = 2
"""
LLM_MULTI = '[model]\nusers = [1, 2]\n' + TINY_LLM
UNIVERSAL = """[model]
users = [1, 2]
prompt = "text+learned"
prompt_tokens = 2
layers_tapped = [1, 2]
inputs = ["csi", "gnss", "rsrp"]
fusion = "gate"
encoders = "contrastive"
[model.heads.beam]
inputs = ["csi_history", "gnss", "rsrp"]
""" + TINY_LLM
TRAIN = """[train]
steps = 2
batch_size = 4
pool_drops = 4
val_drops = 4
label_steps = 1
val_every = 2
checkpoint_every = 2
{extra}"""
ABLATIONS = {"uni_no_prefix": ('prompt = "text+learned"', 'prompt = "text"'),
             "uni_no_encoders": ('encoders = "contrastive"', 'encoders = "trained"'),
             "uni_no_gate": ('fusion = "gate"', 'fusion = "concat"'),
             "uni_no_layers": ("layers_tapped = [1, 2]\n", ""),
             "uni_no_uncertainty": None}


def _agents() -> dict:
    """role -> (arch, tasks, model section, train extra)."""
    out = {"universal": ("llm", ALL, UNIVERSAL, 'loss_weights = "uncertainty"\n'),
           "llm_multi": ("llm", None, LLM_MULTI, "")}
    for role, change in ABLATIONS.items():
        model = UNIVERSAL if change is None else UNIVERSAL.replace(*change)
        out[role] = ("llm", ALL, model, "" if change is None else 'loss_weights = "uncertainty"\n')
    for t in UNI_TASKS:
        head = "csi_history" if t == "beam" else "csi"
        out[f"llm_{t}"] = ("llm", f'["{t}"]', f'[model]\ninputs = ["{head}", "gnss"]\nfusion = "gate"\n'
                                                 '[model.backbone]\nsource = "tiny"\nlayers = 2\n', "")
        out[f"sensenet_{t}"] = ("sensenet", f'["{t}"]', f'[model]\ninputs = ["{head}", "rsrp"]\nwidth = 16\n'
                                                         'hidden = 16\nblocks = 1\n', "")
    return out


SEEDED = ("universal", "uni_no_gate")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("universal")
    (root / "scenarios").mkdir()
    (root / "scenarios" / "u.toml").write_text(SCENARIO)
    lines = ['scenario = "scenarios/u.toml"', "[scenarios]", 'universal = "scenarios/u.toml"', "[agents]"]
    for role, (arch, tasks, model, extra) in _agents().items():
        folders = []
        for seed in range(2 if role in SEEDED else 1):
            d = root / "agents" / (role + (f"-seed{seed}" if seed else ""))
            d.mkdir(parents=True)
            head = f'[agent]\narch = "{arch}"\nscenario = "scenarios/u.toml"\nseed = {seed}\n'
            head += f"tasks = {tasks}\n" if tasks else ""
            (d / "agent.toml").write_text(head + model + TRAIN.format(extra=extra))
            folders.append(f'"agents/{d.name}"')
        lines.append(f"{role} = [{', '.join(folders)}]")
    (root / "paper").mkdir()
    (root / "paper" / "tiny.toml").write_text("\n".join(lines) + "\n")
    return root


def test_universal_is_a_group_apart_from_the_paper_items():
    uni = parse_only("universal")
    assert uni == groups()["universal"] and all(n.startswith("universal") for n in uni)
    assert not set(uni) & set(parse_only(None))
    assert parse_only("universal,universal_los") == uni


def test_every_universal_cell_has_a_sweep_that_measures_it():
    """A row of a table is swept in the data folder its column reads, at the column's point."""
    data = {d.name: d for d in DATA}
    for t in TABLES:
        if t.group != "universal":
            continue
        for c in t.columns:
            sweeps = [s for s in data[c.data or t.data].sweeps if s.task == c.task]
            for row in t.rows:
                assert any(row in s.blocks and s.over == f"{c.x_name}={c.x:g}" for s in sweeps), (t.name, row, c.header)


def test_universal_tables_end_to_end(root, monkeypatch):
    monkeypatch.chdir(root)
    out = root / "out"
    written = run_paper("tiny", out, only="universal", progress=False)
    names = {Path(p).name for p in written}
    for t in groups()["universal"]:
        assert f"{t}.md" in names and f"{t}.csv" in names, t
    sc = load_scenario(root / "scenarios" / "u.toml")
    for drop, tables in UNI_DROPPED.items():     # the dropout folders ran the scenario with it zeroed
        meta = json.loads((out / f"universal_no_{drop}" / "meta.json").read_text())
        assert meta["scenario_hash"] == sc.replace(**tables).hash != sc.hash, drop
    # a cell of the LOS table is the CSV value of its row (the first seed of a single-seed role)
    rows = read_rows(out / "universal" / "results.csv")
    acc = {r["block"]: float(r["value"]) for r in rows if r["task"] == "los" and r["metric"] == "accuracy"}
    md = (out / "universal_los.md").read_text()
    line = next(ln for ln in md.splitlines() if "`sensenet_los`" in ln)
    assert re.search(rf"\| {acc['sensenet_los']:.3f} \|", line), line
    assert "±" in next(ln for ln in md.splitlines() if "`universal, universal-seed1`" in ln)
    targets = (out / "targets.md").read_text()
    assert all(f"best classical block on {t}" in targets for t in UNI_TASKS) and "learned prefixes help" in targets


def _csv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = "task,block,x_name,x,metric,value,ci_low,ci_high,n\n"
    path.write_text(head + "".join(f"{t},{b},snr_db,{x},{m},{v},{v},{v},1\n" for t, b, x, m, v in rows))


def test_universal_targets_from_hand_made_rows(tmp_path):
    """The verdicts of the mechanism claims and the per-task targets, on rows written by hand."""
    from linksim.paper.targets import _universal_targets
    seeds = {"universal": ["u0", "u1"], "uni_no_gate": ["g0", "g1"], "uni_no_layers": ["l0", "l1"],
             "llm_los": ["s0", "s1"]}
    _csv(tmp_path / "universal" / "results.csv",
         [("los", "u0", 20.0, "accuracy", 0.90), ("los", "u1", 20.0, "accuracy", 0.92),
          ("los", "s0", 20.0, "accuracy", 0.95), ("los", "s1", 20.0, "accuracy", 0.97),
          ("los", "kfactor", 20.0, "accuracy", 0.85)])
    _csv(tmp_path / "universal_ablation" / "results.csv",
         [("beam", "u0", 20.0, "top1_accuracy", 0.50), ("beam", "u1", 20.0, "top1_accuracy", 0.52),
          ("beam", "g0", 20.0, "top1_accuracy", 0.40), ("beam", "g1", 20.0, "top1_accuracy", 0.42),
          ("pathloss", "u0", 20.0, "rmse_db", 5.0), ("pathloss", "u1", 20.0, "rmse_db", 5.2),
          ("pathloss", "l0", 20.0, "rmse_db", 5.1), ("pathloss", "l1", 20.0, "rmse_db", 5.3),
          ("position", "u0", 20.0, "pos_err_m", 30.0), ("position", "u1", 20.0, "pos_err_m", 31.0),
          ("position", "l0", 20.0, "pos_err_m", 40.0), ("position", "l1", 20.0, "pos_err_m", 41.0)])
    got = {c.claim: c for c in _universal_targets(tmp_path, seeds)}
    assert got["universal agent beats the best classical block on los (accuracy)"].met
    single = got["universal agent within 5% of its single-task agent on los (accuracy)"]
    assert not single.met and single.measured.startswith("+5.2%")          # (0.96 - 0.91) / 0.96
    gate = got["the modality gate helps beam selection (MMSense): universal minus the ablation"]
    assert gate.met and gate.measured.endswith("→ met")
    layers = got["multi-layer attention helps regression (MMSense): universal minus the ablation"]
    assert layers.met and "pathloss -0.1 (within spread)" in layers.measured and "(decided)" in layers.measured
    assert not any("prefix" in c for c in got)                            # no uni_no_prefix rows: skipped
