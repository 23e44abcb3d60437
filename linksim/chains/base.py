"""What every chain shares: sweep-parameter overrides, seeded channel batches, per-block accumulators."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..channel import ChannelSource
from ..config import derive_seed, generator
from ..errors import LinksimError
from ..scenario import Scenario

SWEEP_PARAMS = ("snr_db", "speed_kmh", "tx_power_dbw", "num_users")


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
        size = h.numel() * h.element_size()
        if self._bytes + size <= self.max_bytes:
            self._store[full] = h
            self._bytes += size
        return h


class Chain:
    """Base of the four chains. Subclasses set ``task``, ``kind``, ``x_names``, ``default_x``,
    ``section`` (the scenario table holding the task's settings) and implement :meth:`run_point`."""

    task = ""
    kind = ""
    section = ""
    x_names: tuple[str, ...] = ()
    default_x = ""

    def __init__(self, scenario: Scenario, cache: ChannelCache | None = None):
        self.scenario = scenario
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
        if x_name == "speed_kmh":
            return sc.channel.speed_kmh
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
        return generator(derive_seed(self.scenario.run.seed, self.task, "noise", point.x_name,
                                     point.x, i))

    def budget(self, point: Point) -> int:
        """Most drops a point can take (for progress bars)."""
        return getattr(point.scenario, self.section).num_samples

    def run_point(self, blocks: dict, point: Point, progress=None) -> dict[str, dict]:
        """Run ``blocks`` (label -> block) at one point; return label -> {metric: accumulator}."""
        raise NotImplementedError


def complex_noise(shape, var, gen: torch.Generator) -> torch.Tensor:
    """CN(0, var) samples, complex64."""
    std = (torch.as_tensor(var, dtype=torch.float32) / 2).sqrt()
    return torch.complex(torch.randn(shape, generator=gen) * std, torch.randn(shape, generator=gen) * std)
