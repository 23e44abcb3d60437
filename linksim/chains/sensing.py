"""What the four sensing tasks (``los``, ``beam``, ``pathloss``, ``position``) share: labelled
drops with side information, the modalities a block sees, and their training cut.

Not a task itself: each task module subclasses :class:`SensingChain`, registers its table and
its task, and says how labels come out of a drop (:meth:`SensingChain.labels`) and how a block is
judged (:meth:`~linksim.chains.Chain.measure`).

A batch is flat (the training harness moves its tensors): the modalities of
:func:`linksim.channel.modalities.observe` under their names, ``inputs`` (the names the block is
handed, the table's ``modalities``), the system information every block may use
(``bs_orientation`` [b,3] rad, ``bs_height`` [b] m: the BS knows where it stands), the task's
labels and ``drops``. A block is called as ``block(obs)`` with ``obs = {name: batch[name]}`` for
the names in ``inputs`` plus the system information (:func:`observation`); a reference block as
``block(obs, truth)``.
"""
from __future__ import annotations

import hashlib
import math

import torch

from ..channel.modalities import dft_codebook, observe, parse_modalities
from ..config import derive_seed, generator
from ..errors import LinksimError
from ..registry import REFERENCE
from ..scenario import setting
from .base import Chain, Dims, Point, finite

#: what every block of a sensing task may read besides its modalities
SYSTEM_INFO = ("bs_orientation", "bs_height")
#: ``los`` table values -> the LOS rule of :meth:`ChannelSource.sample_with_info`
LOS_RULES = {"3gpp": "random", "channel": None}


def modalities_setting(default: str):
    """The ``modalities`` field of a sensing table: the inputs its blocks are handed."""
    from ..channel.modalities import MODALITIES, modalities_ok
    return setting(default, modalities_ok, f"must list modalities of {', '.join(MODALITIES)}, "
                                            "comma-separated, no repeats")


def zeroed_setting():
    """The ``zeroed`` field of a sensing table: modalities handed to the blocks as zeros (a link
    that lost them: the modality-dropout robustness test); in the hash only when set."""
    from ..channel.modalities import MODALITIES, modalities_ok
    return setting("", lambda v: v == "" or modalities_ok(v),
                   f"must be empty or list modalities of {', '.join(MODALITIES)}, comma-separated",
                   hash_if=lambda t: t.zeroed != "")


def los_setting():
    """The ``los`` field of a sensing table: users' LOS states by the 3GPP probability or as
    ``[channel] los`` forces them."""
    return setting("3gpp", choices=tuple(LOS_RULES))


def gnss_setting(default: float = 5.0):
    return setting(default, lambda v: 0 <= v <= 1e4, "must be in [0, 1e4] m (GNSS error std per coordinate)")


def snr_setting():
    return setting(20.0, lambda v: -50 <= v <= 100, "must be in [-50, 100] dB (CSI SNR)")


def observation(batch: dict) -> dict:
    """What a block of a sensing task is handed: the batch's ``inputs`` and the system info."""
    return {k: batch[k] for k in (*batch["inputs"], *SYSTEM_INFO)}


def call(block, batch: dict) -> torch.Tensor:
    """Run a sensing block on a batch (a reference is also handed the batch's ``truth``); its
    output checked finite."""
    obs = observation(batch)
    return finite(block(obs, batch["truth"]) if block.kind == REFERENCE else block(obs))


class DropSet:
    """Labelled drops for training: the channels and their side information, indexed together.

    :param h: [N, T, K, M, F] complex
    :param info: dict of [N, ...] tensors (:meth:`ChannelSource.sample_with_info`)
    """

    def __init__(self, h: torch.Tensor, info: dict):
        self.h, self.info = h, info

    @property
    def shape(self):
        return self.h.shape

    def __len__(self) -> int:
        return self.h.shape[0]

    def __getitem__(self, idx) -> "DropSet":
        return DropSet(self.h[idx], {k: v[idx] for k, v in self.info.items()})


class SensingChain(Chain):
    """Base of the sensing tasks (module docstring). Subclasses set ``section`` and the
    declarations, and implement :meth:`labels`, :meth:`new_metrics` and :meth:`measure`."""

    x_names = ("snr_db", "num_users", "speed_kmh")
    default_x = "snr_db"
    must_match = ("num_bs_antennas", "num_subcarriers")
    #: the table's LOS rule is fixed to the 3GPP probability (``los``: the label needs both classes)
    force_los: str | None = None

    @classmethod
    def table(cls, sc):
        return getattr(sc, cls.section)

    @classmethod
    def history(cls, sc) -> int:
        return getattr(cls.table(sc), "history", 1)

    @classmethod
    def num_time(cls, sc) -> int:
        return cls.history(sc) + getattr(cls.table(sc), "horizon", 0)

    @classmethod
    def dims(cls, sc) -> Dims:
        t = cls.table(sc)
        return Dims(sc.channel.num_bs_antennas, t.num_users, sc.channel.num_subcarriers, cls.history(sc),
                    getattr(t, "horizon", 0), sc.detection.bits_per_symbol, sc.detection.symbols_per_sample,
                    round(sc.channel.sample_spacing_s * 1e6))

    @classmethod
    def los_rule(cls, sc):
        if cls.force_los is not None:
            return cls.force_los
        return LOS_RULES[cls.table(sc).los]

    @classmethod
    def inputs(cls, sc) -> tuple[str, ...]:
        return parse_modalities(cls.table(sc).modalities)

    def __init__(self, scenario, cache=None):
        if scenario.channel.model not in ("uma", "umi", "rma"):
            raise LinksimError(f"task '{self.task}' needs a topology (positions, LOS states, path loss): "
                               f"channel.model must be uma, umi or rma, got {scenario.channel.model!r}")
        super().__init__(scenario, cache)
        self.rsrp_beams = dft_codebook(scenario.channel, 1, self.device, self.cdtype)

    # -- batches ---------------------------------------------------------------------------
    def labels(self, h: torch.Tensor, info: dict, sc) -> dict:
        """The task's truth from a drop: at least ``truth`` (what a reference block is handed)."""
        raise NotImplementedError

    def make_batch(self, h: torch.Tensor, info: dict, sc, gen: torch.Generator) -> dict:
        """A batch from labelled drops ``h [b, T, K, M, F]``: modalities of the history, system
        info, labels."""
        t = self.table(sc)
        obs = observe(h[:, :self.history(sc)], info, t.snr_db, getattr(t, "gnss_std_m", 0.0), gen,
                      self.rsrp_beams)
        for m in parse_modalities(t.zeroed) if t.zeroed else ():
            obs[m] = torch.zeros_like(obs[m])
        return (obs | {k: info[k] for k in SYSTEM_INFO} | self.labels(h, info, sc)
                | {"inputs": self.inputs(sc), "drops": h.shape[0]})

    def batches(self, point: Point):
        sc = point.scenario
        t, per = self.table(sc), sc.run.batch_size
        for i in range(math.ceil(t.num_samples / per)):
            b = min(per, t.num_samples - i * per)
            key = (self.scenario.run.seed, self.task, "channel", i)
            h, info = self.cache.get_info(key, b, sc.channel.speed_kmh, t.num_users, self.num_time(sc),
                                          self.los_rule(sc))
            yield self.make_batch(h, info, sc, self.noise_generator(point, i))

    # -- training ---------------------------------------------------------------------------
    def train_samples(self, pool, layout, seed):
        """Labelled drops (:class:`DropSet`): a pool of channels carries no positions or LOS
        states, so as many drops as the pool has (its K and T) are drawn again with their side
        information, from a seed of ``seed`` and the pool's content (on the CPU)."""
        n, t, k = pool.shape[:3]
        digest = hashlib.sha256(pool[:, 0, :, 0, 0].to(torch.complex64).cpu().numpy().tobytes()).hexdigest()
        sc = self.scenario.replace(run={"device": "cpu"})
        from ..channel import ChannelSource
        src = ChannelSource(sc, seed=derive_seed(seed, digest[:16]))
        parts = [src.sample_with_info(min(32, n - lo), num_users=k, num_time=t,
                                      seed=derive_seed(seed, digest[:16], lo), los=self.los_rule(sc))
                 for lo in range(0, n, 32)]
        return DropSet(torch.cat([p[0] for p in parts]),
                       {key: torch.cat([p[1][key] for p in parts]) for key in parts[0][1]})

    def fresh_samples(self, source, drops, speed_kmh, num_users, num_time, layout, seed):
        """``drops`` new labelled drops, drawn once with their side information (a pool's
        channels would be drawn again by :meth:`train_samples`)."""
        h, info = source.sample_with_info(drops, speed_kmh=speed_kmh, num_users=num_users, num_time=num_time,
                                          seed=seed, los=self.los_rule(self.scenario))
        return DropSet(h.to(torch.complex64).cpu(), {k: v.cpu() for k, v in info.items()})

    def _on_device(self, drops: DropSet) -> DropSet:
        return DropSet(drops.h.to(self.device), {k: v.to(self.device) for k, v in drops.info.items()})

    def train_batch(self, samples, size, gen, train, stage, users=None):
        """``size`` drops drawn with ``gen``; their noise and GNSS errors drawn with ``gen`` too
        (``stage`` is passed on: a model may pre-train its encoders in the first)."""
        idx = torch.randint(0, len(samples), (size,), generator=gen)
        d = self._on_device(samples[idx])
        return self.make_batch(d.h, d.info, self.scenario, generator(int(torch.randint(
            0, 2**62, (1,), generator=gen)), self.device)) | {"stage": stage}

    def val_batches(self, pool, samples, size, seed, train, max_batches):
        """The labelled drops in order, ``run.batch_size`` per batch, noise from a fixed seed."""
        per, out = self.scenario.run.batch_size, []
        for i, lo in enumerate(range(0, min(len(samples), per * max_batches), per)):
            d = self._on_device(samples[lo:lo + per])
            out.append(self.make_batch(d.h, d.info, self.scenario, generator(derive_seed(seed, "val", i), self.device)))
        return out
