"""`linksim paper` end to end on a miniature budget: every figure and table file, tables equal to the
CSV rows they cite, an interrupted run resumed to the same files, and clear errors."""
import csv
import re
from pathlib import Path

import pytest

from linksim.cli import main
from linksim.errors import LinksimError
from linksim.paper import FIGURES, TABLES, item_names, parse_only, run_paper
from linksim.paper import memory as paper_memory
from linksim.paper.render import seed_verdict
from linksim.results import read_rows

PAPER_TABLES = [t for t in TABLES if t.group == "paper"]     # universal: tests/test_paper_universal.py

SCENARIO = """name = "paper-tiny"
[channel]
model = "rayleigh"
bs_rows = 2
bs_cols = 4
[prediction]
num_users = 2
num_samples = 8
[precoding]
num_users = 2
num_samples = 8
[detection]
num_users = 2
min_samples = 8
max_samples = 8
target_errors = 10
[coded]
min_samples = 8
max_samples = 8
[run]
batch_size = 8
"""

LLM = """[model]
users = [1, 2]
prompt = "{prompt}"
[model.backbone]
source = "tiny"
layers = 2
quantization = "{quant}"
random_init = true
[model.heads.prediction]
base = "outdated"
"""
NO_LLM = LLM.replace('source = "tiny"', 'source = "none"')

TRAIN = """[train]
steps = 2
batch_size = 8
pool_drops = 8
val_drops = 4
label_steps = 1
val_every = 2
checkpoint_every = 1
"""

# role -> (arch, tasks, model section)
AGENTS = {
    "rnn": ("rnn", None, ""), "lstm": ("lstm", None, ""), "gru": ("gru", None, ""),
    "transformer": ("transformer", None, ""), "cnn": ("cnn", None, ""),
    "cnn_padded": ("cnn", None, "[model]\nusers = [1, 2]\n"), "dnn": ("dnn", None, ""),
    "detnet": ("detnet", None, ""), "oampnet": ("oampnet", None, "[model]\nnum_layers = 2\n"),
    "llm_multi": ("llm", None, LLM.format(prompt="text", quant="none")),
    "llm_prediction": ("llm", ["prediction"], LLM.format(prompt="text", quant="none")),
    "llm_precoding": ("llm", ["precoding"], LLM.format(prompt="text", quant="none")),
    "llm_detection": ("llm", ["detection"], LLM.format(prompt="text", quant="none")),
    "ablation": ("llm", None, LLM.format(prompt="text", quant="none")),
    "nf4": ("llm", None, LLM.format(prompt="text", quant="nf4")),
    "loftq": ("llm", None, LLM.format(prompt="text", quant="loftq")),
    "random_init": ("llm", None, LLM.format(prompt="text", quant="none")),
    "no_backbone": ("llm", None, NO_LLM.format(prompt="text", quant="none")),
    "single_prompt": ("llm", ["detection"], LLM.format(prompt="text", quant="none")),
    "single_noprompt": ("llm", ["detection"], LLM.format(prompt="none", quant="none")),
}

# roles trained with two seeds: their table cells are mean ± half range, differences get verdicts
SEEDED = ("ablation", "nf4", "llm_detection", "single_prompt", "single_noprompt")

GRIDS = """[grids]
fig5 = "speed_kmh=10,40,50,100"
fig6 = "snr_db=0:20:20"
fig7 = "tx_power_dbw=-10:10:20"
fig8 = "num_users=1:2:1"
fig9 = "snr_db=0:20:20"
loop = "speed_kmh=10:100:90"
coded = "snr_db=0:20:20"
gen = "speed_kmh=10:100:90"
multitask_k = "num_users=2"
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A working directory with paper/tiny.toml, its scenario and untrained tiny agents."""
    root = tmp_path_factory.mktemp("paper")
    (root / "scenarios").mkdir()
    (root / "scenarios" / "tiny.toml").write_text(SCENARIO)
    lines = ['scenario = "scenarios/tiny.toml"', "[scenarios]"]
    for s in ("umi", "rma", "cdl"):      # generalisation: other channel models, the same sizes
        (root / "scenarios" / f"tiny-{s}.toml").write_text(SCENARIO.replace('"rayleigh"', f'"{s}"'))
        lines.append(f'{s} = "scenarios/tiny-{s}.toml"')
    lines.append("[agents]")
    for role, (arch, tasks, model) in AGENTS.items():
        folders = []
        for seed in range(2 if role in SEEDED else 1):
            d = root / "agents" / (role + (f"-seed{seed}" if seed else ""))
            d.mkdir(parents=True)
            head = f'[agent]\narch = "{arch}"\nscenario = "scenarios/tiny.toml"\nseed = {seed}\n'
            if tasks:
                head += "tasks = [" + ", ".join(f'"{t}"' for t in tasks) + "]\n"
            (d / "agent.toml").write_text(head + model + TRAIN)
            folders.append(f'"agents/{d.name}"')
        lines.append(f'{role} = ' + (f"[{', '.join(folders)}]" if len(folders) > 1 else folders[0]))
    lines.append('best_predictor = "agents/gru"')
    (root / "paper").mkdir()
    (root / "paper" / "tiny.toml").write_text("\n".join(lines) + "\n" + GRIDS)
    return root


@pytest.fixture
def fixed_memory(monkeypatch):
    """Memory varies between processes: the resume test pins it (the probe is tested on its own)."""
    monkeypatch.setattr(paper_memory, "training_memory",
                        lambda folder, steps=3, batch=32: {"backbone_mib": 1.5, "train_peak_mib": 100.0})


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "meta.json" and "agents" not in p.parts}


def test_paper_end_to_end_resume_identical(root, monkeypatch, fixed_memory):
    monkeypatch.chdir(root)
    # an interrupted run (after a few sweep points) resumes to the same files as one uninterrupted
    from linksim.chains.base import Chain
    real, calls = Chain.run_point, {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Chain, "run_point", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_paper("tiny", "out-a", progress=False)
    assert calls["n"] == 7
    run_paper("tiny", "out-a", progress=False)
    monkeypatch.setattr(Chain, "run_point", real)
    run_paper("tiny", "out-b", progress=False)
    a, b = _files(root / "out-a"), _files(root / "out-b")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    for f in FIGURES:
        for ext in ("csv", "png", "pdf"):
            assert f"{f.name}.{ext}" in a, f"{f.name}.{ext} missing"
    for t in PAPER_TABLES:
        assert f"{t.name}.md" in a and f"{t.name}.csv" in a
    readme = (root / "out-a" / "README.md").read_text()
    assert all(f"{f.name}.png" in readme for f in FIGURES) and "table1" in readme
    assert "targets.md" in a and "The paper's claims, measured here" in readme


def test_table_cells_equal_csv_values(root, monkeypatch, fixed_memory):
    monkeypatch.chdir(root)
    run_paper("tiny", "out-b", only=",".join(t.name for t in PAPER_TABLES), progress=False)
    for t in PAPER_TABLES:
        index = {}
        for data in {t.data} | {c.data for c in t.columns if c.data}:
            for r in read_rows(root / "out-b" / data / "results.csv"):
                index[(data, r["block"], r["task"], r["metric"], float(r["x"]))] = float(r["value"])
        body = [line for line in (root / "out-b" / f"{t.name}.md").read_text().splitlines()
                if line.startswith("| ") and "`" in line]
        used = 0
        assert len(body) == len([r for r in t.rows if r != "@backbone"])
        for line in body:
            cells = [c.strip() for c in line.strip("|").split("|")]
            agents = re.search(r"`([^`]+)`", cells[0]).group(1).split(", ")
            for c, text in zip(t.columns, cells[1:]):
                hits = [index[k] for a in agents if (k := (c.data or t.data, a, c.task, c.metric, c.x)) in index]
                if len(hits) > 1:       # two training seeds: mean ± half their range
                    want = f"{sum(hits) / 2:.{c.digits}f} ± {abs(hits[0] - hits[1]) / 2:.{c.digits}f}"
                else:
                    want = f"{hits[0]:.{c.digits}f}" if hits else "—"
                assert text == want, (t.name, c.header, text)
                used += len(hits)
        # the table's CSV holds exactly the rows it shows
        shown = list(csv.DictReader(open(root / "out-b" / f"{t.name}.csv")))
        assert len(shown) == used


def test_only_subset_and_user_backbone(root, monkeypatch, fixed_memory):
    monkeypatch.chdir(root)
    files = run_paper("tiny", "out-c", only="fig7", backbone="tiny", progress=False)
    names = {p.name for p in files}
    assert {"fig7.csv", "fig7.png", "fig7.pdf", "README.md"} <= names and "fig5.png" not in names
    assert not (root / "out-c" / "fig5").exists()
    run_paper("tiny", "out-c", only="table2", backbone="tiny", progress=False)
    md = (root / "out-c" / "table2.md").read_text()
    assert "backbone-tiny" in md and (root / "out-c" / "agents" / "backbone-tiny" / "model.safetensors").is_file()


def test_only_unknown_name_is_one_line(capsys):
    with pytest.raises(LinksimError, match="items: fig5, fig6"):
        parse_only("fig7,figX")
    assert parse_only(None) == [n for n in item_names() if not n.startswith("universal")]
    assert main(["paper", "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'nope'" in err and "table1" in err and "groups: paper, universal" in err


def test_memory_probe_measures_the_backbone(root, monkeypatch):
    """The real probe (fresh process): the NF4 backbone is stored smaller than the fp32 one."""
    monkeypatch.chdir(root)
    fp = paper_memory.training_memory(str(root / "agents" / "ablation"), steps=1, batch=4)
    q = paper_memory.training_memory(str(root / "agents" / "nf4"), steps=1, batch=4)
    assert fp["train_peak_mib"] > 50 and q["train_peak_mib"] > 50
    assert 0 < q["backbone_mib"] < fp["backbone_mib"]


def test_second_run_on_the_same_data_folder_is_refused(root, monkeypatch, fixed_memory):
    import fcntl
    monkeypatch.chdir(root)
    (root / "out-d" / "fig7").mkdir(parents=True)
    with open(root / "out-d" / "fig7" / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)            # another run holds it
        with pytest.raises(LinksimError, match="another linksim run is writing there"):
            run_paper("tiny", "out-d", only="fig7", progress=False)


@pytest.mark.parametrize("section, line, match", [
    ("changes", 'table1 = { prediction = { num_samples = 4 } }',
     "changes.table1: not a data folder of linksim paper \\(known: ablation, coded"),
    ("grids", 'fig10 = "snr_db=0:10:10"', "grids.fig10: not a grid of linksim paper \\(known: coded, fig5"),
])
def test_budget_key_that_names_nothing_is_refused(root, monkeypatch, section, line, match):
    """A misspelt item under [changes] or [grids] would silently change nothing: refused, naming it."""
    monkeypatch.chdir(root)
    text = (root / "paper" / "tiny.toml").read_text()
    head = "[grids]\n" if section == "grids" else "[changes]\n"
    body = text.replace("[grids]\n", head + line + "\n", 1) if section == "grids" else text + head + line + "\n"
    (root / "paper" / "bad.toml").write_text(body)
    with pytest.raises(LinksimError, match=match):
        run_paper("bad", "out-e", only="fig7", progress=False)


def test_snr_gap_against_hand_interpolation():
    """The reference falls a decade per 5 dB; a curve a decade per 10 dB needs 5 dB more at 1e-2."""
    from linksim.paper.targets import snr_gap_db
    ref = {0.0: 1e-1, 5.0: 1e-2, 10.0: 1e-3}
    assert snr_gap_db({0.0: 1e-1, 10.0: 1e-2}, ref) == pytest.approx(5.0)
    assert snr_gap_db(ref, ref) == pytest.approx(0.0)
    assert snr_gap_db({10.0: 10 ** -2.5}, ref) == pytest.approx(2.5)    # halfway on the log scale
    assert snr_gap_db({20.0: 1e-5}, ref) != snr_gap_db({20.0: 1e-5}, ref)   # outside: nan


def test_targets_read_the_csv_values(root, monkeypatch, tmp_path):
    """Fake fig5/fig7 rows with known gaps: the checks report them and flag met / not met."""
    from linksim.paper.budget import load_budget
    from linksim.paper.run import Roles
    from linksim.paper.targets import checks
    from linksim.results import ResultsStore
    monkeypatch.chdir(root)
    roles = Roles(load_budget("tiny"), None)

    def rows(task, metric, x_name, values):
        return [{"task": task, "block": b, "x_name": x_name, "x": x, "metric": metric, "value": v,
                 "ci_low": v, "ci_high": v, "n": 1} for b, curve in values.items() for x, v in curve.items()]
    ResultsStore(tmp_path / "fig5").add(rows("prediction", "nmse_db", "speed_kmh", {
        "llm_multi": {10.0: -20.0, 50.0: -12.4}, "llm_prediction": {10.0: -20.3, 50.0: -13.0}}))
    ResultsStore(tmp_path / "fig7").add(rows("precoding", "sum_rate", "tx_power_dbw", {
        "llm_multi": {0.0: 15.0}, "llm_precoding": {0.0: 15.2}}))
    got = {c.claim.split(" (")[0]: c for c in checks(tmp_path, roles)}
    assert len(got) == 2
    cp = got["multi-task CP NMSE within 0.5 dB of single-task"]
    assert cp.measured == "worst gap +0.60 dB" and not cp.met
    pre = got["multi-task sum-rate within 2% of single-task"]
    assert pre.measured == "worst ratio 0.987" and pre.met


def test_two_seed_tables_print_differences_beside_the_spread(root, monkeypatch, fixed_memory):
    """Table I's rows of two seeds each: the differences section gives, per column, the difference
    of the means and the verdict the seed ranges allow, recomputed here from the CSV."""
    monkeypatch.chdir(root)
    run_paper("tiny", "out-b", only="table1", progress=False)
    text = (root / "out-b" / "table1.md").read_text()
    rows = {(r["block"], r["task"], r["metric"]): float(r["value"])
            for r in read_rows(root / "out-b" / "ablation" / "results.csv")}
    ref = [rows[(b, "prediction", "nmse_db")] for b in ("ablation", "ablation-seed1")]
    nf4 = [rows[(b, "prediction", "nmse_db")] for b in ("nf4", "nf4-seed1")]
    d, spread, verdict = seed_verdict(nf4, ref)
    line = next(x for x in text.splitlines() if x.startswith("| LLM NF4 4-bit |"))
    first = line.split("|")[2].strip()
    assert first.startswith(f"{d:+.2f} (spread {spread:.2f}, ") and verdict in first
    loftq = next(x for x in text.splitlines() if x.startswith("| LLM LoftQ 4-bit |"))
    assert "one seed" in loftq


@pytest.mark.parametrize("row, ref, verdict", [
    ([1.0, 2.0], [3.0, 4.0], "decided"), ([1.0, 3.5], [3.0, 4.0], "within spread"),
    ([1.0], [3.0, 4.0], "one seed"), ([5.0, 5.2], [3.0, 4.0], "decided")])
def test_seed_verdict(row, ref, verdict):
    d, spread, v = seed_verdict(row, ref)
    assert v == verdict and d == pytest.approx(sum(row) / len(row) - sum(ref) / len(ref))
    assert spread == pytest.approx((max(row) - min(row) + max(ref) - min(ref)) / 2)
