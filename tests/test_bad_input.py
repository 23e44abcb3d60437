"""Bad sweep input is refused in one line (exit 2) before anything is computed, and a block that
returns NaN/Inf stops the sweep without writing a row for that point (earlier rows stay)."""
from pathlib import Path

import numpy as np
import pytest

import linksim.sweep
from linksim.chains import Chain
from linksim.cli import main
from linksim.results import read_rows


def _cli_error(capsys, argv) -> str:
    """Run the CLI; assert exit 2 with one ``linksim: error:`` line on stderr and return it."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("linksim: error: "), (code, err)
    return err[0]


def _sweep_argv(scenario, out, over=None, task="detection", blocks="lmmse"):
    argv = ["sweep", str(scenario), "--task", task, "--blocks", blocks, "--out", str(out), "--quiet"]
    return argv + (["--over", over] if over else [])


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if any sweep point is run."""
    def run_point(self, *a, **k):
        raise AssertionError("a point was computed")
    monkeypatch.setattr(Chain, "run_point", run_point)


@pytest.mark.parametrize("over, named", [
    ("snr_db=nan", "nan is not a finite number"),
    ("snr_db=0,inf", "inf is not a finite number"),
    ("snr_db=-inf:10:5", "-inf is not a finite number"),
    ("snr_db=0:nan:1", "nan is not a finite number"),
    ("snr_db=0:10:nan", "nan is not a finite number"),
])
def test_non_finite_over_values_are_refused(capsys, tiny_toml, tmp_path, no_compute, over, named):
    err = _cli_error(capsys, _sweep_argv(tiny_toml(), tmp_path / "o", over))
    assert over in err and named in err


def test_absurd_grid_is_refused_before_it_is_built(capsys, tiny_toml, tmp_path, monkeypatch, no_compute):
    real = np.arange

    def small_arange(start, stop, step):
        assert (stop - start) / step < 1e6, "a huge grid was built"
        return real(start, stop, step)

    monkeypatch.setattr(np, "arange", small_arange)
    err = _cli_error(capsys, _sweep_argv(tiny_toml(), tmp_path / "o", "snr_db=0:1e9:1"))
    assert "snr_db=0:1e9:1" in err and "1000000001 points" in err


def test_largest_allowed_grid_is_accepted():
    name, values = linksim.sweep.parse_over(f"snr_db=0:{linksim.sweep.MAX_POINTS - 1}:1")
    assert name == "snr_db" and len(values) == linksim.sweep.MAX_POINTS


@pytest.mark.parametrize("where", ["parent_is_file", "out_is_file"])
def test_unwritable_out_is_refused_before_compute(capsys, tiny_toml, tmp_path, no_compute, where):
    f = tmp_path / "file"
    f.write_text("")
    out = f / "sub" if where == "parent_is_file" else f
    err = _cli_error(capsys, _sweep_argv(tiny_toml(), out, "snr_db=10"))
    assert f"--out {out}: not a writable folder" in err


def test_out_folder_is_created_and_probe_removed(tiny_toml, tmp_path):
    out = tmp_path / "a" / "b"
    assert main(_sweep_argv(tiny_toml(), out, "snr_db=10")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "results.csv"]


class Poisoned:
    """A real block whose output is multiplied by ``factor`` on the calls where ``when(*inputs)``."""

    def __init__(self, block, factor, when=lambda *inputs: True):
        self.block, self.kind, self.factor, self.when = block, block.kind, factor, when

    def __call__(self, *inputs):
        out = self.block(*inputs)
        return out * self.factor if self.when(*inputs) else out


def _poison(monkeypatch, name, factor, when=lambda *inputs: True):
    """Make the sweep build block ``name`` as a :class:`Poisoned` one."""
    real = linksim.blocks.get

    def get(n, kind=None, scenario=None, **options):
        block = real(n, kind, scenario, **options)
        return Poisoned(block, factor, when) if n == name else block

    monkeypatch.setattr(linksim.blocks, "get", get)


def test_nan_output_stops_sweep_and_keeps_earlier_rows(capsys, tiny_toml, tmp_path, monkeypatch):
    _poison(monkeypatch, "lmmse", float("nan"), when=lambda y, h, noise_var: noise_var < 0.5)  # snr 10
    out = tmp_path / "o"
    err = _cli_error(capsys, _sweep_argv(tiny_toml(), out, "snr_db=0,10", blocks="zf_det,lmmse"))
    assert "block 'lmmse' at snr_db=10: " in err and "non-finite values (NaN/Inf)" in err
    n_bad = int(err.split(": ")[-1].split()[0])
    assert n_bad > 0
    rows = read_rows(out / "results.csv")
    assert {(r["block"], float(r["x"])) for r in rows} == {("zf_det", 0.0), ("lmmse", 0.0)}


@pytest.mark.parametrize("task, blocks, poisoned, over", [
    ("precoding", "zf", "zf", "tx_power_dbw=0"),
    ("precoding", "dpc_bound", "dpc_bound", "tx_power_dbw=0"),
    ("prediction", "ar", "ar", "speed_kmh=30"),
    ("loop", "outdated+rzf", "rzf", "speed_kmh=30"),
    ("loop", "ar+rzf", "ar", "speed_kmh=30"),
])
def test_inf_output_is_caught_in_every_chain(capsys, tiny_toml, tmp_path, monkeypatch, task, blocks,
                                             poisoned, over):
    _poison(monkeypatch, poisoned, float("inf"))
    out = tmp_path / "o"
    err = _cli_error(capsys, _sweep_argv(tiny_toml(), out, over, task=task, blocks=blocks))
    assert f"block '{blocks}' at {over}: " in err and "non-finite values (NaN/Inf)" in err
    assert not (out / "results.csv").exists()


# -- every bad input: exit 2, one line naming the culprit, nothing computed or overwritten ----------
def _trained_agent(tmp_path, tiny_toml):
    """A folder that looks trained (weights + [result] sizes); its bytes must survive."""
    d = tmp_path / "agent"
    d.mkdir()
    (d / "agent.toml").write_text(f'[agent]\narch = "dnn"\nscenario = "{tiny_toml()}"\n'
                                  "[result]\nsteps = 7\n[result.dims]\nnum_bs_antennas = 8\n")
    (d / "model.safetensors").write_bytes(b"trained weights")
    return d


def _file(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return str(p)


def _latin1_agent(tmp_path, tiny_toml):
    d = tmp_path / "latin"
    _file(tmp_path, "latin/agent.toml", f'# Fran\xe7ois\n[agent]\narch = "dnn"\nscenario = "{tiny_toml()}"\n'
          .encode("latin-1"))
    return str(d)


def _agent_without_scenario(tmp_path, tiny_toml):
    """An untrained agent whose scenario is nowhere: not beside it, above it, or in the working
    directory."""
    _file(tmp_path, "lost/agent.toml", b'[agent]\narch = "dnn"\nscenario = "nowhere/lost.toml"\n')
    return str(tmp_path / "lost")


def _llm_agent(model="", train=""):
    """An untrained tiny LLM agent with extra ``[model]`` / ``[train]`` lines (its mechanisms)."""
    def make(tmp_path, tiny_toml):
        _file(tmp_path, "llm/agent.toml", f'[agent]\narch = "llm"\nscenario = "{tiny_toml()}"\n[model]\n{model}\n'
              f'[model.backbone]\nsource = "tiny"\nlayers = 2\n[train]\n{train}\n'.encode())
        return ["train", str(tmp_path / "llm")]
    return make


def _sensenet_agent(model=""):
    """An untrained small sensing agent (LOS) with extra ``[model]`` lines."""
    def make(tmp_path, tiny_toml):
        _file(tmp_path, "sn/agent.toml", f'[agent]\narch = "sensenet"\ntasks = ["los"]\nscenario = "{tiny_toml()}"\n'
              f'[model]\n{model}\n'.encode())
        return ["train", str(tmp_path / "sn")]
    return make


def _nine_users(tmp_path, tiny_toml):
    """The tiny scenario (8 antennas) with 9 detection users: valid, overloaded."""
    text = Path(tiny_toml()).read_text().replace("[detection]\nnum_users = 2", "[detection]\nnum_users = 9")
    return _file(tmp_path, "k9.toml", text.encode())


def _long_detection(tmp_path, tiny_toml):
    """The tiny scenario with 200000 detection drops per point at most."""
    text = Path(tiny_toml()).read_text().replace("max_samples = 16", "max_samples = 200000")
    return _file(tmp_path, "long.toml", text.encode())


def _sensing(line, table="position"):
    """The tiny scenario with ``line`` in a sensing task's table (and a few drops)."""
    def make(tmp_path, tiny_toml):
        return tiny_toml(f"\n[{table}]\nnum_samples = 8\n{line}\n")
    return make


def _dataset_argv(scenario, out):
    return ["dataset", str(scenario), "--task", "detection", "--n", "2", "--out", str(out), "--quiet"]


SHIPPED_CSV = Path(__file__).parent.parent / "results" / "baselines" / "detection-paper" / "results.csv"


def _sweep(over, scenario=None, task="precoding", blocks="zf"):
    """argv of a sweep of the tiny scenario (or ``scenario(tmp, tiny_toml)``) with ``over``."""
    def make(tmp, toml):
        sc = scenario(tmp, toml) if scenario else toml()
        overs = [over] if isinstance(over, str) else over or []
        return _sweep_argv(sc, tmp / "o", task=task, blocks=blocks)[:-1] + \
            [a for o in overs for a in ("--over", o)] + ["--quiet"]
    return make


BAD_INPUTS = [
    pytest.param(lambda tmp, toml: ["train", str(_trained_agent(tmp, toml)), "--steps", "5"],
                 ["agent: already trained (7 steps in model.safetensors)", "--out DIR", "--force"],
                 id="train-over-trained-agent"),
    pytest.param(lambda tmp, toml: ["plot", str(Path(_file(tmp, "bin/results.csv", bytes(range(256)))).parent)],
                 ["bin/results.csv: not a linksim results file (not UTF-8 text)"], id="plot-binary-csv"),
    pytest.param(lambda tmp, toml: ["plot", str(Path(_file(tmp, "g/results.csv", SHIPPED_CSV.read_bytes()
                                                         + b"garbage,line\n")).parent)],
                 ["g/results.csv: line", "is not a results row", "damaged"], id="plot-garbage-line"),
    pytest.param(_sweep("snr_db=10", lambda tmp, toml: _file(tmp, "s.toml", b'name = "caf\xe9"\n')),
                 ["s.toml: not UTF-8 text (byte 0xe9 at offset 11)"], id="scenario-latin1"),
    pytest.param(_sweep("snr_db=10", lambda tmp, toml: _file(tmp, "s.toml", bytes(range(256)))),
                 ["s.toml: not UTF-8 text (byte 0x80 at offset 128)"], id="scenario-binary"),
    pytest.param(lambda tmp, toml: ["train", _latin1_agent(tmp, toml)],
                 ["latin/agent.toml: not UTF-8 text (byte 0xe7"], id="agent-toml-latin1"),
    pytest.param(lambda tmp, toml: ["train", _agent_without_scenario(tmp, toml)],
                 ["lost/agent.toml: agent.scenario 'nowhere/lost.toml': scenario file not found in the "
                  "agent folder", "lost, any folder above it, or the working directory"],
                 id="agent-scenario-not-found"),
    pytest.param(_sweep("snr_db=10", lambda tmp, toml: _file(tmp, "e.toml", b"# nothing\n\n")),
                 ["e.toml: empty scenario"], id="scenario-empty"),
    pytest.param(_sweep(["tx_power_dbw=0:10:5", "num_users=1,2"]),
                 ["--over given 2 times (tx_power_dbw=0:10:5, num_users=1,2)", "one parameter"],
                 id="over-twice"),
    pytest.param(_sweep("num_users=0"), ["--over num_users=0: precoding.num_users = 0 must be > 0"],
                 id="over-breaks-size-rule"),
    pytest.param(_sweep("speed_kmh=30,1e6", task="prediction", blocks="ar"),
                 ["--over speed_kmh=1e+06: channel.speed_kmh = 1e+06 is at or beyond 449.7 km/h",
                  "Nyquist rate 1/(2*sample_spacing_s) = 1000 Hz"], id="speed-beyond-nyquist"),
    pytest.param(_sweep("tx_power_dbw=500"),
                 ["--over tx_power_dbw=500: precoding.tx_power_dbw = 500 is beyond +-192.7 dBW"],
                 id="power-beyond-single-range"),
    pytest.param(_sweep("tx_power_dbw=0,60"),
                 ["--over tx_power_dbw=60: precoding.tx_power_dbw - noise_power_dbw = 70 dB is beyond "
                  "+-69.2 dB", 'run.precision = "double"'], id="power-ratio-beyond-single"),
    pytest.param(_sweep("snr_db=200", scenario=lambda tmp, toml: toml('precision = "double"')),
                 ["--over snr_db=200: precoding.tx_power_dbw - noise_power_dbw = 200 dB is beyond "
                  "+-156.5 dB"], id="power-ratio-beyond-double"),
    pytest.param(_sweep("num_users=2,9", blocks="rzf,zf"),
                 ["--over num_users=9: block 'zf' needs num_users <= BS antennas, got K=9 > M=8"],
                 id="zf-overloaded"),
    pytest.param(_sweep("num_users=9", task="detection", blocks="lmmse,zf_det"),
                 ["--over num_users=9: block 'zf_det' needs num_users <= BS antennas",
                  "zero-forcing inverts H^H H, which is singular for K > M (use lmmse, ml or mf)"],
                 id="zf_det-overloaded"),
    pytest.param(_sweep("num_users=9", task="loop", blocks="ar+wmmse,outdated+zf"),
                 ["--over num_users=9: block 'outdated+zf' needs num_users <= BS antennas"],
                 id="loop-zf-overloaded"),
    pytest.param(_sweep("snr_db=0,10", task="detection", blocks="lmmse,ml", scenario=_long_detection),
                 ["--over snr_db=0: ml: 16-QAM, K=2: 256 hypotheses x 288 symbol vectors per drop x 200000 "
                  "drops = 1.5e10 hypothesis evaluations per point (limit 1.0e10", "use kbest, or at most "
                  "135633 drops (detection.max_samples)"], id="ml-point-takes-hours"),
    pytest.param(_sweep("num_users=2,6", task="coded", blocks="ml"),
                 ["--over num_users=6: ml: 16-QAM with K=6 users is 1.7e7 hypotheses (limit 1.0e6); "
                  "use kbest"], id="ml-too-many-hypotheses"),
    pytest.param(lambda tmp, toml: _dataset_argv(toml(), tmp),
                 ["is a folder; give the file to write"], id="dataset-out-is-folder"),
    pytest.param(lambda tmp, toml: _dataset_argv(toml(), Path(_file(tmp, "f", b"")) / "cp.h5"),
                 ["f/cp.h5: cannot write it (Not a directory)"], id="dataset-out-unwritable"),
    pytest.param(_sweep(None, task="detection", blocks="zf_det", scenario=_nine_users),
                 ["k9.toml: block 'zf_det' needs num_users <= BS antennas, got K=9 > M=8"],
                 id="zf_det-overloaded-scenario"),
    pytest.param(_sweep(None, task="position", blocks="knn", scenario=_sensing('modalities = "csi,lidar"')),
                 ["position.modalities = 'csi,lidar' must list modalities of csi, csi_history, gnss, rsrp"],
                 id="unknown-modality"),
    pytest.param(_sweep(None, task="position", blocks="knn", scenario=_sensing('zeroed = "lidar"')),
                 ["position.zeroed = 'lidar' must be empty or list modalities of csi, csi_history, gnss, rsrp"],
                 id="unknown-zeroed-modality"),
    pytest.param(_sweep(None, task="position", blocks="gnss_report,knn", scenario=_sensing('modalities = "csi,gnss"')),
                 ["block 'knn' reads modality rsrp, which [position] modalities = 'csi,gnss' does not list"],
                 id="modality-not-listed"),
    pytest.param(_sweep(None, task="beam", blocks="last_beam", scenario=_sensing("oversampling = 9", "beam")),
                 ["beam.oversampling = 9 must be in 1..8"], id="beam-oversampling-out-of-range"),
    pytest.param(_sweep("snr_db=0,500", task="los", blocks="kfactor"),
                 ["--over snr_db=500: los.snr_db = 500.0 must be in [-50, 100] dB"], id="los-snr-out-of-range"),
    pytest.param(_sweep(None, task="pathloss", blocks="uma_formula", scenario=_sensing("gnss_std_m = -1", "pathloss")),
                 ["pathloss.gnss_std_m = -1.0 must be in [0, 1e4] m"], id="gnss-std-negative"),
    pytest.param(_sweep(None, task="los", blocks="kfactor", scenario=lambda tmp, toml: toml(model="rayleigh")),
                 ["task 'los' needs a topology", "channel.model must be uma, umi or rma, got 'rayleigh'"],
                 id="los-without-topology"),
    pytest.param(_llm_agent(model='prompt = "soft"'),
                 ["model.prompt must be one of text, none, learned, text+learned, got 'soft'"], id="llm-prompt-mode"),
    pytest.param(_llm_agent(model="layers_tapped = [1, 3]"),
                 ["model.layers_tapped must be in 1..2 (model.backbone.layers)"], id="llm-layers-tapped-range"),
    pytest.param(_llm_agent(train='loss_weights = "learned"'),
                 ['train.loss_weights must map tasks to numbers or be "uncertainty", got \'learned\''],
                 id="llm-loss-weights-string"),
    pytest.param(_llm_agent(model='inputs = ["csi", "lidar"]'),
                 ["llm: unknown modality 'lidar' in model.inputs"], id="llm-unknown-input"),
    pytest.param(_sensenet_agent('fusion = "sum"'),
                 ["sensenet: model.fusion must be one of concat, gate, attention, got 'sum'"], id="sensenet-fusion"),
    pytest.param(_sensenet_agent('encoders = "contrastive"'),
                 ['model.encoders = "contrastive" pairs the CSI with another modality: model.inputs must hold '
                  'csi or csi_history and one more'], id="contrastive-one-modality"),
    pytest.param(_sensenet_agent('encoders = "contrastive"\ninputs = ["csi", "gnss"]'),
                 ['model.encoders = "contrastive" pre-trains the encoders in the first stage: set '
                  'train.label_steps > 0'], id="contrastive-no-first-stage"),
    pytest.param(_sensenet_agent('tasks = ["beam"]'),
                 ["'tasks' belongs in [agent], not [model]"], id="tasks-in-model"),
    pytest.param(_llm_agent(train='mixed_precision = "fp8"'),
                 ['train.mixed_precision must be "no", "bf16" or "fp16", got \'fp8\''], id="mixed-precision"),
    pytest.param(_llm_agent(train='data_device = "accelerator"\ndata_workers = 1'),
                 ['train.data_device = "accelerator" draws the drops in the trainer\'s process: set '
                  'train.data_workers = 0'], id="data-device-with-workers"),
]


@pytest.mark.parametrize("make_argv, named", BAD_INPUTS)
def test_bad_input_gives_one_line_and_keeps_files(capsys, tiny_toml, tmp_path, no_compute,
                                                  make_argv, named):
    argv = make_argv(tmp_path, tiny_toml)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    err = _cli_error(capsys, argv)
    assert all(n in err for n in named), err
    assert {p: p.read_bytes() for p in before} == before       # nothing given was changed


def test_interrupted_dataset_leaves_no_partial_file_and_says_so(capsys, tiny_toml, tmp_path, monkeypatch):
    from linksim.channel import ChannelSource
    real = ChannelSource.stream

    def one_batch_then_ctrl_c(self, *a, **k):
        yield next(real(self, *a, **k))
        raise KeyboardInterrupt

    monkeypatch.setattr(ChannelSource, "stream", one_batch_then_ctrl_c)
    assert main(_dataset_argv(tiny_toml(), tmp_path / "cp.h5")) == 130
    assert capsys.readouterr().err.strip() == ("linksim: interrupted; nothing was written (the partial "
                                               "file was removed); re-run the command to start over")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]
