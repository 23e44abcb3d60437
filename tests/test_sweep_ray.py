"""The Ray backend: the same results.csv as the local backend, byte for byte, for every task; resume
across backends; a worker killed in the middle of a point, or the driver killed, still ends in the
same file; bad input fails before any task starts; no Ray, one line. One local 2-CPU cluster serves
the module (started once: it costs seconds)."""
import functools
import logging
import os
import subprocess
import sys

import pytest

import linksim
from linksim import cli
from linksim.errors import LinksimError
from linksim.sweep import get_backend, run_point, sweep
from linksim.sweep.ray_backend import NEEDS_RAY, RayBackend

# (task, blocks, --over, extra TOML, channel model): each a few drops per point. Prediction and loop
# sweep the history SNR: on the 38.901 models a speed sweep's numbers depend on which point a
# process draws first (Sionna's first draw consumes extra random numbers), see the README.
TASKS = {
    "prediction": (["outdated", "ar"], "snr_db=0,10,20", "", "uma"),
    "precoding": (["zf", "wmmse"], "tx_power_dbw=-10:10:5", "", "uma"),
    "detection": (["lmmse", "kbest"], "snr_db=0:20:5", "", "uma"),
    "loop": (["outdated+zf", "ar+wmmse"], "snr_db=0,20", "", "uma"),
    "coded": (["lmmse", "kbest"], "snr_db=-10,0,30",
              "[coded]\nmin_samples = 8\nmax_samples = 16\ntarget_block_errors = 20\n", "rayleigh"),
}


@pytest.fixture(scope="module")
def cluster():
    """A local 2-CPU Ray cluster for the module; its workers see this checkout first."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": env})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # the test hooks travel by value
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _both(path, task, out, **ray_options):
    blocks, over, *_ = TASKS[task]
    local = sweep(path, task, blocks, over, out / "local", progress=False)
    on_ray = sweep(path, task, blocks, over, out / "ray", progress=False,
                   backend=get_backend("ray", **ray_options))
    return local.csv.read_text(), on_ray.csv.read_text()


@pytest.mark.parametrize("task", list(TASKS))
def test_ray_gives_the_local_csv_byte_for_byte(cluster, tiny_toml, tmp_path, task):
    _, _, extra, model = TASKS[task]
    local, on_ray = _both(tiny_toml(extra, model=model), task, tmp_path, workers=2)
    assert on_ray == local and local.count("\n") > 4


def test_a_speed_sweep_on_uma_is_identical(cluster, tiny_toml, tmp_path):
    path = tiny_toml()
    args = ("prediction", ["outdated"], "speed_kmh=10,60,100")
    local = sweep(path, *args, tmp_path / "l", progress=False)
    on_ray = sweep(path, *args, tmp_path / "r", progress=False, backend=get_backend("ray", workers=2))
    assert on_ray.csv.read_text() == local.csv.read_text()


def test_an_agent_travels_to_the_workers(cluster, tmp_path):
    sc = linksim.load_scenario("scenarios/quick.toml").replace(
        detection={"min_samples": 8, "max_samples": 8, "target_errors": 1})
    blocks = ["lmmse", "agent:agents/oampnet"]
    local = sweep(sc, "detection", blocks, "snr_db=4,12", tmp_path / "l", progress=False)
    on_ray = sweep(sc, "detection", blocks, "snr_db=4,12", tmp_path / "r", progress=False, backend="ray")
    assert on_ray.csv.read_text() == local.csv.read_text()
    assert {r["block"] for r in on_ray.rows} == {"lmmse", "oampnet"}


@pytest.mark.parametrize("first,then", [("local", "ray"), ("ray", "local")])
def test_resume_across_backends(cluster, tiny_toml, tmp_path, first, then):
    path = tiny_toml()
    blocks, over, *_ = TASKS["precoding"]
    full = sweep(path, "precoding", blocks, over, tmp_path / "full", progress=False)
    half = sweep(path, "precoding", blocks, "tx_power_dbw=-10,0,10", tmp_path / "mixed", progress=False,
                 backend=first)
    assert len(half.rows) == 3 * 2
    done = sweep(path, "precoding", blocks, over, tmp_path / "mixed", progress=False, backend=then)
    assert done.csv.read_text() == full.csv.read_text()


def _die_once(plan, spec, labels, progress, workspace, flag):
    """run_point, except that the first time it runs the point x=0 its worker process exits
    after the first batch (as a killed worker): ``flag`` records that it happened."""
    def report(n):
        progress(n)
        if spec.x == 0 and not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(1)
    return run_point(plan, spec, labels, report, workspace)


def test_a_worker_killed_mid_point_is_retried_to_the_same_csv(cluster, tiny_toml, tmp_path):
    path = tiny_toml()
    flag = str(tmp_path / "killed-once")
    local, on_ray = _both(path, "detection", tmp_path, workers=2,
                          point_fn=functools.partial(_die_once, flag=flag))
    assert os.path.exists(flag) and on_ray == local


def _fail(plan, spec, labels, progress, workspace):
    raise LinksimError("agent:x: refused on the worker")


def test_an_error_on_a_worker_is_one_line(cluster, tiny_toml, tmp_path):
    with pytest.raises(LinksimError, match=r"^agent:x: refused on the worker$"):
        sweep(tiny_toml(), "precoding", ["zf"], "tx_power_dbw=0,5", tmp_path / "e", progress=False,
              backend=get_backend("ray", point_fn=_fail))


def test_more_gpus_than_the_cluster_has_is_one_line(cluster, tiny_toml, tmp_path):
    with pytest.raises(LinksimError, match=r"^--gpus-per-worker 1: the Ray cluster has 0 GPU\(s\)$"):
        sweep(tiny_toml(), "precoding", ["zf"], "tx_power_dbw=0", tmp_path / "g", progress=False,
              backend=get_backend("ray", gpus_per_worker=1))


DRIVER = """
import os, signal, sys
from linksim.results import ResultsStore
from linksim.sweep import get_backend, sweep
add, calls = ResultsStore.add, []
def add_then_die(self, rows):
    add(self, rows)
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)      # the driver dies as with kill -9
ResultsStore.add = add_then_die
sweep(sys.argv[1], "precoding", ["zf", "wmmse"], "tx_power_dbw=-10:10:5", sys.argv[2], progress=False,
      backend=get_backend("ray", address=sys.argv[3], workers=1))
"""


def test_a_killed_driver_resumes(cluster, tiny_toml, tmp_path):
    path = tiny_toml()
    full = sweep(path, "precoding", ["zf", "wmmse"], "tx_power_dbw=-10:10:5", tmp_path / "full",
                 progress=False)
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", DRIVER, path, str(out), cluster], capture_output=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len(linksim.results.read_rows(out / "results.csv")) == 2 * 2   # two points kept
    resumed = sweep(path, "precoding", ["zf", "wmmse"], "tx_power_dbw=-10:10:5", out, progress=False,
                    backend="ray")
    assert resumed.csv.read_text() == full.csv.read_text()


@pytest.mark.parametrize("blocks,message", [
    ("zf,nope", "unknown block 'nope'"),
    ("zf,agent:no/such/agent", "agent:no/such/agent"),
])
def test_bad_blocks_fail_before_any_task(tiny_toml, tmp_path, monkeypatch, capsys, blocks, message):
    def never(*args):
        raise AssertionError("a task was started")
    monkeypatch.setattr(RayBackend, "run", never)
    rc = cli.main(["sweep", tiny_toml(), "--task", "precoding", "--blocks", blocks, "--over",
                   "tx_power_dbw=0", "--out", str(tmp_path / "b"), "--backend", "ray", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err


def test_without_ray_one_line_exit_2(tiny_toml, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)            # import ray -> ImportError
    rc = cli.main(["sweep", tiny_toml(), "--task", "precoding", "--blocks", "zf", "--out",
                   str(tmp_path / "n"), "--backend", "ray", "--workers", "2"])
    assert rc == 2 and capsys.readouterr().err == f"linksim: error: {NEEDS_RAY}\n"
    assert not (tmp_path / "n").exists()


def test_ray_options_need_the_ray_backend(tiny_toml, tmp_path, capsys):
    rc = cli.main(["sweep", tiny_toml(), "--task", "precoding", "--blocks", "zf", "--out",
                   str(tmp_path / "o"), "--workers", "2"])
    assert rc == 2 and capsys.readouterr().err == "linksim: error: --backend local does not take --workers\n"
    with pytest.raises(LinksimError, match="--workers 0: must be >= 1"):
        get_backend("ray", workers=0)


@pytest.mark.parametrize("command", [["sweep", "s.toml", "--task", "detection", "--blocks", "lmmse",
                                      "--out", "o"], ["paper"], ["demo"], ["baselines"], ["llm"]])
def test_every_sweeping_command_takes_the_ray_options(command):
    a = cli.build_parser().parse_args(command + ["--backend", "ray", "--address", "auto", "--workers",
                                                 "3", "--gpus-per-worker", "0.5"])
    b = cli._backend(a)
    assert isinstance(b, RayBackend) and (b.address, b.workers, b.gpus) == ("auto", 3, 0.5)


def test_import_linksim_does_not_import_ray():
    code = "import sys, linksim, linksim.cli, linksim.sweep; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
