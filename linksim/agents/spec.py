"""``agent.toml``: what an agent is (architecture, tasks, scenario), how it is trained, what it
measured.

Layout::

    [agent]
    arch = "oampnet"                      # a registered architecture (`linksim list`)
    tasks = ["detection"]                 # optional: the tasks it is trained for (default: all
                                          # the architecture serves)
    scenario = "scenarios/quick.toml"     # relative: the agent folder or a folder above it, then
                                          # the working directory (AgentSpec.scenario_path)
    seed = 0
    [model]                               # constructor options of the architecture
    num_layers = 10
    [train]                               # recipe (see TrainSpec)
    steps = 2000
    ...
    [result]                              # written by `linksim train`: dims, metrics, wall time

Weights live beside it in ``model.safetensors``.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import LinksimError, read_text
from ..registry import trainable_tasks

WEIGHTS = "model.safetensors"


@dataclass
class TrainSpec:
    """Training recipe. Ranges are ``[low, high]`` drawn uniformly per sample.

    Data: by default every step's batch comes from new channel drops (``pool_drops = 0``), drawn
    ahead of the trainer by ``data_workers`` worker processes, each batch a function of the seed
    and the step (``drops_reuse = R``: R consecutive steps sample their batches from one draw, for
    models whose step costs less than drawing its drops); ``pool_drops = N`` draws N drops once and samples every batch from them (the
    older recipe, kept for comparison). Stopping: training ends at ``steps``, after ``max_minutes``
    of wall clock, or when the validation score (:meth:`linksim.chains.Chain.score`, in dB, summed
    over the tasks) has not improved by ``min_delta`` dB for ``patience`` validations in a row;
    the agent keeps the weights of its best validation.
    """

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    lr_min: float = 1e-5          # cosine schedule from lr down to lr_min
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    pool_drops: int = 0           # 0: fresh drops every step; N: a fixed pool of N drops (cached in .cache/)
    data_workers: int = 1         # processes drawing batches ahead of the trainer (0: in the trainer)
    drops_reuse: int = 1          # fresh data: steps that share one draw of drops (>1 when drawing
                                  # drops costs more than a step, e.g. the small detectors)
    val_drops: int = 64           # drops of a separate seed for validation
    snr_db: list = field(default_factory=lambda: [5.0, 25.0])        # detection / history SNR
    speed_kmh: list = field(default_factory=lambda: [10.0, 100.0])   # user speeds (prediction)
    tx_power_dbw: list = field(default_factory=lambda: [-10.0, 10.0])  # precoding power budget
    label_steps: int = 0          # precoding: steps on WMMSE's (p, lambda) before the rate loss
    val_every: int = 250
    checkpoint_every: int = 250
    patience: int = 5             # validations without improvement before stopping (0: never stop early)
    min_delta: float = 0.01       # dB: the smallest improvement of the validation score that counts
    max_minutes: float = 0.0      # wall-clock cap in minutes (0: none)
    dataset: str = ""             # an exported HDF5 (`linksim dataset`) to train on instead of a pool
    # on a GPU: "bf16" | "fp16" autocast (Accelerate's mixed_precision; "no": float32 throughout),
    # and where fresh drops are drawn ("cpu": the same batches on every machine; "accelerator":
    # on the training device, in the trainer's process: data_workers must be 0)
    mixed_precision: str = "no"
    data_device: str = "cpu"
    # several tasks (one batch of each per step): weights of the per-task losses (default: each
    # task's own ``loss_weight``, e.g. prediction 1, detection 5, precoding 0.2) or "uncertainty"
    # (learned, linksim.training.weights; one task is never weighted), batch sizes
    loss_weights: dict | str = field(default_factory=dict)
    batch_sizes: dict = field(default_factory=dict)   # per-task override of batch_size


@dataclass
class AgentSpec:
    path: Path
    arch: str
    tasks: tuple[str, ...]
    scenario: str
    seed: int
    model: dict
    train: TrainSpec
    result: dict

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    def scenario_path(self) -> Path:
        """The scenario file ``agent.scenario`` names, wherever the command runs.

        An absolute path is taken as written. A relative path is looked up, first match wins:

        1. in the agent folder, then in each folder above it, nearest first (the shipped agents
           name ``scenarios/quick.toml``, relative to the repository that holds ``agents/``);
        2. in the working directory (agents written for the directory they were trained from).

        :output path: the file, relative to the working directory when it lies under it
        :raises LinksimError: in one line naming the agent.toml and every place looked

        .. rubric:: Examples

        .. code-block:: python

            from linksim.agents.spec import read_agent
            read_agent("/work/linksim/agents/oampnet").scenario_path()   # .../scenarios/quick.toml
        """
        p = Path(self.scenario)
        where = self.path / "agent.toml"
        if p.is_absolute():
            if not p.is_file():
                raise LinksimError(f"{where}: agent.scenario {p}: scenario file not found")
            return p
        folder = self.path.resolve()
        for base in (folder, *folder.parents, Path.cwd()):
            if (base / p).is_file():
                return _shown(base / p)
        raise LinksimError(f"{where}: agent.scenario {str(p)!r}: scenario file not found in the agent "
                           f"folder {folder}, any folder above it, or the working directory {Path.cwd()}")


def _shown(path: Path) -> Path:
    """``path`` relative to the working directory when it lies under it (as the user would type
    it), else absolute."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def read_agent(path: str | Path) -> AgentSpec:
    """Parse and check ``PATH/agent.toml`` (one-line errors naming the file and key)."""
    folder = Path(path)
    f = folder / "agent.toml"
    if not f.is_file():
        raise LinksimError(f"agent:{path}: no agent.toml in {folder}")
    try:
        data = tomllib.loads(read_text(f))
    except tomllib.TOMLDecodeError as e:
        raise LinksimError(f"{f}: not valid TOML ({e})") from None
    unknown = set(data) - {"agent", "model", "train", "result"}
    if unknown:
        raise LinksimError(f"{f}: unknown table [{sorted(unknown)[0]}] (known: agent, model, train, result)")
    agent = data.get("agent", {})
    if "kind" in agent:
        raise LinksimError(f"{f}: agent.kind was renamed agent.arch (the architecture; kind means a "
                           "block kind)")
    for key in ("arch", "scenario"):
        if not isinstance(agent.get(key), str):
            raise LinksimError(f"{f}: agent.{key} must be a string")
    tasks = agent.get("tasks", [])
    known = trainable_tasks()
    if not isinstance(tasks, list) or not all(t in known for t in tasks) or len(set(tasks)) != len(tasks):
        raise LinksimError(f"{f}: agent.tasks must be a list of distinct tasks from {known}, got {tasks!r}")
    extra = set(agent) - {"arch", "tasks", "scenario", "seed", "description"}
    if extra:
        raise LinksimError(f"{f}: unknown key 'agent.{sorted(extra)[0]}'")
    names = {x.name: x for x in fields(TrainSpec)}
    train = {}
    for key, value in data.get("train", {}).items():
        if key not in names:
            raise LinksimError(f"{f}: unknown key 'train.{key}' (known: {', '.join(names)})")
        default = getattr(TrainSpec(), key)
        if key == "loss_weights" and isinstance(value, str):
            if value != "uncertainty":
                raise LinksimError(f"{f}: train.loss_weights must map tasks to numbers or be \"uncertainty\", "
                                   f"got {value!r}")
            train[key] = value
            continue
        if isinstance(default, dict):
            ok = isinstance(value, dict) and all(k in known and isinstance(v, (int, float))
                                                 and not isinstance(v, bool) and v >= 0 for k, v in value.items())
            if not ok:
                raise LinksimError(f"{f}: train.{key} must map tasks ({', '.join(known)}) to numbers "
                                   f">= 0, got {value!r}")
            cast = float if key == "loss_weights" else int
            value = default | {k: cast(v) for k, v in value.items()}
        elif isinstance(default, list):
            ok = (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
                  and value[0] <= value[1])
            if not ok:
                raise LinksimError(f"{f}: train.{key} must be [low, high] numbers, got {value!r}")
            value = [float(v) for v in value]
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise LinksimError(f"{f}: train.{key}: expected {type(default).__name__}, got {value!r}")
        if isinstance(value, (int, float)) and value < 0:
            raise LinksimError(f"{f}: train.{key} = {value!r} must be >= 0")
        train[key] = value
    spec = TrainSpec(**train)
    if spec.steps <= 0 or spec.batch_size <= 0 or spec.val_drops <= 0 or spec.val_every <= 0 \
            or spec.checkpoint_every <= 0 or spec.drops_reuse <= 0:
        raise LinksimError(f"{f}: train.steps, batch_size, val_drops, val_every, checkpoint_every and "
                           "drops_reuse must be > 0")
    if spec.mixed_precision not in ("no", "bf16", "fp16"):
        raise LinksimError(f"{f}: train.mixed_precision must be \"no\", \"bf16\" or \"fp16\", "
                           f"got {spec.mixed_precision!r}")
    if spec.data_device not in ("cpu", "accelerator"):
        raise LinksimError(f"{f}: train.data_device must be \"cpu\" or \"accelerator\", got {spec.data_device!r}")
    if spec.data_device == "accelerator" and spec.data_workers:
        raise LinksimError(f"{f}: train.data_device = \"accelerator\" draws the drops in the trainer's "
                           "process: set train.data_workers = 0")
    seed = agent.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise LinksimError(f"{f}: agent.seed must be an integer >= 0")
    return AgentSpec(folder, agent["arch"], tuple(tasks), agent["scenario"], seed, dict(data.get("model", {})),
                     spec, dict(data.get("result", {})))


def write_result(spec: AgentSpec, result: dict) -> None:
    """Replace the ``[result]`` table of agent.toml, keeping the rest (and its comments) as is."""
    import tomlkit

    from ..results import atomic_write

    f = spec.path / "agent.toml"
    doc = tomlkit.parse(f.read_text())
    table = tomlkit.table()
    for key, value in result.items():
        table[key] = value
    doc["result"] = table
    atomic_write(f, tomlkit.dumps(doc))
