"""What every task shares: its chain (sweep-parameter overrides, seeded channel batches,
per-block accumulators), its declarations, and the sizes an agent is built for.

A task is one registered :class:`Chain` subclass in one module (:func:`linksim.registry.register_task`),
which declares everything the rest of linksim needs to know of it: the block kind that serves it,
its scenario table, the sweep parameters, the sizes an agent must share with a scenario
(``must_match``), the classical references a trained block is validated beside, the default
multi-task loss weight, the LLM prompt template, and how training samples and batches are cut from
a channel pool. Sweeps, training, validation, ``linksim list``, ``linksim dataset`` and the LLM
agent read these declarations; none of them names a task.

Every chain is cut the same way, so that sweeps and training validation count metrics through one
path: :meth:`Chain.batches` draws a point's inputs and truth (a dict per batch of drops),
:meth:`Chain.new_metrics` makes the task's accumulators, and :meth:`Chain.measure` runs one block
on one batch and updates them. Every tensor and generator is created on the scenario's
``run.device`` and in its ``run.precision``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ..channel import ChannelSource
from ..config import check_device, derive_seed, dtypes, generator
from ..errors import LinksimError
from ..registry import task_spec
from ..scenario import Scenario

SWEEP_PARAMS = ("snr_db", "speed_kmh", "tx_power_dbw", "num_users")


class NonFiniteOutput(LinksimError):
    """A block returned NaN/Inf entries; :meth:`Chain.run_point` names the block and the point."""

    def __init__(self, count: int):
        super().__init__(f"a block's output has {count} non-finite values (NaN/Inf)")
        self.count = count
        self.label = ""        # the block's label, when the raiser knows it


def finite(out: torch.Tensor) -> torch.Tensor:
    """``out`` unchanged, or :class:`NonFiniteOutput` if any entry is NaN or Inf. Chains pass every
    block output through it, so that no metric is ever computed from one."""
    ok = torch.isfinite(out)
    if not ok.all():
        raise NonFiniteOutput(int(ok.numel() - ok.sum()))
    return out


@dataclass(frozen=True)
class Dims:
    """Sizes an agent is built for (all ints), read from a scenario by a task
    (:meth:`Chain.dims`): K is the task's own ``num_users``."""

    num_bs_antennas: int    # M
    num_users: int          # K
    num_subcarriers: int    # F
    history: int            # L
    horizon: int            # P
    bits_per_symbol: int
    symbols_per_sample: int  # T
    sample_spacing_us: int = 500   # CSI sample spacing (the LLM's instruction states it)
    num_beams: int = 0       # B, beams of the scenario's [beam] codebook (0: not recorded)

    @classmethod
    def from_scenario(cls, sc: Scenario, task: str) -> "Dims":
        """The sizes of ``sc`` as task ``task`` sees them (``num_beams``: whatever the task, so a
        multi-task agent built from its first task's sizes can still score beams)."""
        dims = task_spec(task).cls.dims(sc)
        beam = getattr(sc, "beam", None)
        if beam is None:
            return dims
        return replace(dims, num_beams=beam.oversampling ** 2 * sc.channel.bs_rows * sc.channel.bs_cols)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Point:
    """One sweep point: the scenario with ``x_name = x`` applied."""

    scenario: Scenario
    x_name: str
    x: float


class ChannelCache:
    """Channel batches keyed by everything that determines them, so an SNR or power sweep draws
    each drop once and every block at every point sees the same channels (common random numbers).
    Bounded by ``max_bytes``; beyond it batches are simply regenerated."""

    def __init__(self, source: ChannelSource, max_bytes: int = 512 * 2**20):
        self.source = source
        self.max_bytes = max_bytes
        self._store: dict[tuple, torch.Tensor] = {}
        self._bytes = 0

    def get(self, key: tuple, batch: int, speed_kmh: float, num_users: int, num_time: int):
        full = key + (batch, speed_kmh, num_users, num_time)
        if full in self._store:
            return self._store[full]
        # the seed leaves out the speed: a speed sweep moves the same drops at other speeds
        seed = derive_seed(*key, batch, num_users, num_time)
        h = self.source.sample(batch, speed_kmh=speed_kmh, num_users=num_users, num_time=num_time,
                               seed=seed)
        self._keep(full, h, h.numel() * h.element_size())
        return h

    def get_info(self, key: tuple, batch: int, speed_kmh: float, num_users: int, num_time: int, los):
        """``(H, info)`` of :meth:`ChannelSource.sample_with_info`, cached as :meth:`get` caches
        ``H`` (``los``: the LOS rule, in the seed and the key)."""
        full = key + (batch, speed_kmh, num_users, num_time, "info", los)
        if full in self._store:
            return self._store[full]
        seed = derive_seed(*key, batch, num_users, num_time, "info", los)
        out = self.source.sample_with_info(batch, speed_kmh=speed_kmh, num_users=num_users,
                                           num_time=num_time, seed=seed, los=los)
        self._keep(full, out, sum(t.numel() * t.element_size() for t in (out[0], *out[1].values())))
        return out

    def _keep(self, key: tuple, value, size: int) -> None:
        if self._bytes + size <= self.max_bytes:
            self._store[key] = value
            self._bytes += size


class Chain:
    """Base of the tasks: a task's chain and its declarations.

    ``task`` and ``kind`` are set by :func:`~linksim.registry.register_task`. Subclasses set the
    declarations below and implement :meth:`batches`, :meth:`new_metrics` and :meth:`measure`; a
    trainable task also :meth:`train_samples`, :meth:`train_batch` and :meth:`val_batches`.

    :param scenario: the validated :class:`~linksim.Scenario`; its ``[run]`` table gives seed,
        batch size, device and precision
    :param cache: a :class:`ChannelCache` to share drops between chains (default: a new one)
    """

    task = ""
    kind = ""
    #: the scenario table holding the task's users, samples and swept values
    section = ""
    #: sweep parameters of the task (``--over NAME``) and the default one
    x_names: tuple[str, ...] = ()
    default_x = ""
    #: :class:`Dims` fields an agent must share with the scenario it serves this task in
    must_match: tuple[str, ...] = ()
    #: classical blocks a trained block's validation reports beside it
    references: tuple[str, ...] = ()
    #: default weight of the task's loss in a multi-task agent (``train.loss_weights`` overrides)
    loss_weight: float = 1.0
    #: the LLM instruction: (identifier, description, instruction); format fields in
    #: :func:`linksim.llm.prompt.dims_fields`
    prompt: tuple[str, str, str] = ()
    #: the validation metric that picks an agent's best weights and stops training on a plateau
    val_metric: str = ""

    # -- sizes ----------------------------------------------------------------------------
    @classmethod
    def num_users(cls, sc: Scenario) -> int:
        """K of the task in ``sc``."""
        return getattr(sc, cls.section).num_users

    @classmethod
    def num_time(cls, sc: Scenario) -> int:
        """Time samples per drop the task's channels have (1: a snapshot)."""
        return 1

    @classmethod
    def dims(cls, sc: Scenario) -> Dims:
        """The sizes an agent serving this task in ``sc`` is built for."""
        return Dims(sc.channel.num_bs_antennas, cls.num_users(sc), sc.channel.num_subcarriers,
                    sc.prediction.history, sc.prediction.horizon, sc.detection.bits_per_symbol,
                    sc.detection.symbols_per_sample, round(sc.channel.sample_spacing_s * 1e6))

    # -- blocks ---------------------------------------------------------------------------
    @classmethod
    def make_block(cls, name: str, scenario: Scenario):
        """The block ``name`` for this task (:func:`linksim.blocks.get` with the task's kind)."""
        from ..blocks import get
        return get(name, cls.kind, scenario)

    @staticmethod
    def parts(block) -> tuple:
        """The blocks a block of this task is made of (itself; a loop pair: its two blocks)."""
        return (block,)

    def __init__(self, scenario: Scenario, cache: ChannelCache | None = None):
        self.scenario = scenario
        self.device = check_device(scenario.run.device)
        self.dtype, self.cdtype = dtypes(scenario.run.precision)
        self.cache = cache or ChannelCache(ChannelSource(scenario))

    # -- sweep points -----------------------------------------------------
    def point(self, x_name: str | None = None, x: float | None = None) -> Point:
        """The sweep point ``x_name = x`` (default: the task's default parameter at its scenario value)."""
        x_name = x_name or self.default_x
        if x_name not in self.x_names:
            raise LinksimError(f"--over {x_name}: not a parameter of task '{self.task}' "
                               f"(choose from {', '.join(self.x_names)})")
        sc = self.scenario
        if x is None:
            return Point(sc, x_name, float(self.current(x_name)))
        return Point(self.apply(x_name, x), x_name, float(x))

    def current(self, x_name: str):
        sc = self.scenario
        if x_name == "speed_kmh":   # a [low, high] range is labelled by its midpoint
            v = sc.channel.speed_kmh
            return sum(v) / 2 if isinstance(v, tuple) else v
        return getattr(getattr(sc, self.section), x_name)

    def apply(self, x_name: str, x: float) -> Scenario:
        if x_name == "speed_kmh":
            return self.scenario.replace(channel={"speed_kmh": float(x)})
        if x_name == "num_users":
            if float(x) != int(x):
                raise LinksimError(f"--over num_users: values must be integers, got {x}")
            return self.scenario.replace(**{self.section: {"num_users": int(x)}})
        return self.scenario.replace(**{self.section: {x_name: float(x)}})

    # -- randomness -----------------------------------------------------------
    def channels(self, point: Point, i: int, batch: int, num_users: int, num_time: int):
        """Batch ``i`` of the point's channels; independent of the SNR/power being swept."""
        key = (self.scenario.run.seed, self.task, "channel", i)
        return self.cache.get(key, batch, point.scenario.channel.speed_kmh, num_users, num_time)

    def noise_generator(self, point: Point, i: int) -> torch.Generator:
        """The generator of batch ``i``'s symbols and noise, on the scenario's device."""
        return generator(derive_seed(self.scenario.run.seed, self.task, "noise", point.x_name,
                                     point.x, i), self.device)

    def budget(self, point: Point) -> int:
        """Most drops a point can take (for progress bars)."""
        return getattr(point.scenario, self.section).num_samples

    # -- the one metric path ------------------------------------------------------
    def batches(self, point: Point):
        """Yield the point's batches: dicts of inputs and truth, ``"drops"`` = drops in the batch."""
        raise NotImplementedError

    @staticmethod
    def new_metrics(block=None) -> dict:
        """Fresh accumulators ``{metric: accumulator}`` of the task for ``block`` (the metrics
        may depend on it: a reference precoder in the loop has no BER)."""
        raise NotImplementedError

    @staticmethod
    def measure(block, batch: dict, acc: dict) -> None:
        """Run ``block`` on ``batch`` and update the accumulators ``acc``."""
        raise NotImplementedError

    def done(self, acc: dict, drops: int) -> bool:
        """Whether one block's accumulators ``acc`` may stop after ``drops`` drops (detection,
        coded: enough errors). Each block stops on its own, as if ``sim_ber`` ran it alone."""
        return False

    def run_point(self, blocks: dict, point: Point, progress=None) -> dict[str, dict]:
        """Run ``blocks`` (label -> block) at one point; return label -> {metric: accumulator}.
        All blocks see the same batches (paired comparisons); a block that :meth:`done` stops
        leaves the rest running on the following batches, so its counts come from the first
        drops every other block saw too. A block output with NaN/Inf stops the point with a
        :class:`LinksimError` naming the block, the point and the count."""
        acc = {label: self.new_metrics(block) for label, block in blocks.items()}
        running = dict(blocks)
        drops = 0
        for batch in self.batches(point):
            label = "?"
            try:
                batch = self.prepare(batch, running)
                for label, block in running.items():
                    self.measure(block, batch, acc[label])
            except NonFiniteOutput as e:
                label = e.label or label
                raise LinksimError(f"block '{label}' at {point.x_name}={point.x:g}: {e.count} non-finite "
                                   "values (NaN/Inf) in its output; stopped, no row written for "
                                   "this point") from None
            drops += batch["drops"]
            if progress:
                progress(batch["drops"])
            running = {lb: b for lb, b in running.items() if not self.done(acc[lb], drops)}
            if not running:
                break
        return acc

    def prepare(self, batch: dict, blocks: dict) -> dict:
        """A batch with what its blocks share computed once (default: the batch as it is). A
        :class:`NonFiniteOutput` raised here carries the label of the block it came from."""
        return batch

    # -- training (trainable tasks) ---------------------------------------------------------
    def train_samples(self, pool: torch.Tensor, layout: str, seed: int) -> torch.Tensor:
        """Training samples cut from a channel pool ``[N, T, K, M, F]`` (``layout``: how the
        architecture wants them, :attr:`linksim.agents.AgentModel.layouts`)."""
        raise LinksimError(f"task {self.task!r} is not trainable")

    def fresh_samples(self, source, drops: int, speed_kmh, num_users: int, num_time: int, layout: str,
                      seed: int):
        """Training samples cut from ``drops`` new drops of ``source`` drawn from ``seed`` (fresh
        data, :class:`linksim.training.data.FreshData`): :meth:`train_samples` of those channels."""
        h = source.sample(drops, speed_kmh=speed_kmh, num_users=num_users, num_time=num_time, seed=seed)
        return self.train_samples(h.to(torch.complex64).cpu(), layout, seed)

    def train_batch(self, samples: torch.Tensor, size: int, gen: torch.Generator, train, stage: str,
                    users: tuple[int, int] | None = None) -> dict:
        """One training batch of ``size`` samples drawn with ``gen`` (``train``: the recipe's
        ranges; ``stage``: its phase; ``users``: a K range drawn per batch)."""
        raise LinksimError(f"task {self.task!r} is not trainable")

    def val_batches(self, pool: torch.Tensor, samples: torch.Tensor, size: int, seed: int, train,
                    max_batches: int) -> list[dict]:
        """Validation batches in the chain's own layout (what :meth:`measure` takes)."""
        raise LinksimError(f"task {self.task!r} is not trainable")

    @classmethod
    def score(cls, metrics: dict) -> float:
        """The validation score, lower is better, in dB (so that the tasks of a multi-task agent
        add up): here ``val_metric`` as it is (a metric in dB, lower better); a task whose metric
        is not overrides it (detection: ``10 log10 SER``; precoding: ``-10 log10`` of the rate)."""
        return float(metrics[f"val_{cls.val_metric}"])

    @staticmethod
    def summary(metrics: dict) -> dict:
        """Derived validation metrics from ``{"val_<metric>[_<reference>]": value}`` (default: none)."""
        return {}


def uniform(lo_hi, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` values uniform in ``[low, high]`` (a training range), float32 on the CPU."""
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def complex_noise(shape, var, gen: torch.Generator, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """CN(0, var) samples of complex ``dtype`` on the generator's device; ``var`` a float, a
    per-sample ``[shape[0]]`` tensor (one variance per row), or a tensor broadcastable to ``shape``."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    var = torch.as_tensor(var, dtype=real, device=gen.device)
    if var.dim() == 1 and len(shape) > 1:
        var = var.reshape((-1,) + (1,) * (len(shape) - 1))
    std = (var / 2).sqrt()
    return torch.complex(torch.randn(shape, generator=gen, device=gen.device, dtype=real) * std,
                         torch.randn(shape, generator=gen, device=gen.device, dtype=real) * std)
