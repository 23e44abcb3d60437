"""The one registry of linksim: block names and agent architectures. A leaf module.

It imports none of the blocks (as peft's ``register_peft_method``): every block module registers
itself with a decorator when its package is imported, and ``import linksim`` imports them all
once. Names are resolved to blocks by :func:`linksim.blocks.get`.

Block kinds and their call protocols (``b`` batch; complex tensors in the block's ``cdtype``):

- ``precoder``:  ``(h [b,K,M], p_tx, noise_var) -> w [b,M,K]`` with ``sum |w|^2 <= p_tx`` per
  sample; user k receives ``h[:, k, :] @ w @ s``.
- ``detector``:  ``(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T]``, ``y = h @ x + n``.
- ``predictor``: ``(h_hist [b,L,...]) -> h_future [b,P,...]``.
- ``reference``: a limit curve that stands in for a block of kind ``serves`` but sees the truth;
  its protocol is that kind's inputs plus the true quantity the block would have to estimate:
  serving ``precoder``: ``(h_true [b,K,M], p_tx, noise_var) -> sum_rate [b]`` (e.g. the DPC sum
  capacity); serving ``predictor``: ``(h_hist, h_future) -> h_future`` (the genie).

``p_tx`` and ``noise_var`` are a float or a ``[b]`` tensor. Agent architectures (trained blocks)
are registered with the tasks they can serve; one agent folder is usable as the block kind of
each task it was trained for.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from .errors import LinksimError

#: task -> the block kind that serves it (the loop task combines a predictor and a precoder)
TASK_KIND = {"prediction": "predictor", "precoding": "precoder", "detection": "detector"}
KIND_TASK = {v: k for k, v in TASK_KIND.items()}
BLOCK_KINDS = tuple(TASK_KIND.values())
REFERENCE = "reference"
KINDS = BLOCK_KINDS + (REFERENCE,)


@dataclass(frozen=True)
class BlockSpec:
    """A registered block: ``factory(**options)`` builds it; ``serves`` is the kind of block it
    can stand in for (itself for ordinary blocks, the bounded kind for references)."""

    name: str
    kind: str
    serves: str
    factory: Callable
    doc: str

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options the factory accepts."""
        return tuple(p for p in inspect.signature(self.factory).parameters if p not in ("self",))


@dataclass(frozen=True)
class ArchSpec:
    """A registered agent architecture: ``cls(dims, **hparams)``, able to serve ``tasks``."""

    name: str
    cls: type
    tasks: tuple[str, ...]
    doc: str
    tiny: dict = field(default_factory=dict)   # hparams of a small instance for generic tests


BLOCKS: dict[str, BlockSpec] = {}
ARCHS: dict[str, ArchSpec] = {}


def _first_line(obj) -> str:
    return (inspect.getdoc(obj) or "").split("\n")[0]


def register_block(name: str, kind: str, serves: str | None = None):
    """Class decorator: register a block under ``name``. Sets ``cls.kind`` and ``cls.serves``.

    :param name: the short name users give (``zf``, ``lmmse``, ``ar``, ...)
    :param kind: one of :data:`KINDS`
    :param serves: for ``kind="reference"``, the block kind it bounds (``precoder``, ...)
    """
    if kind not in KINDS:
        raise ValueError(f"unknown block kind {kind!r} (known: {', '.join(KINDS)})")
    if (kind == REFERENCE) != (serves is not None) or (serves is not None and serves not in BLOCK_KINDS):
        raise ValueError(f"{name}: a reference block names the block kind it serves, other kinds do not")
    if name in BLOCKS:
        raise ValueError(f"block name {name!r} registered twice")

    def deco(cls):
        cls.kind = kind
        cls.serves = serves or kind
        BLOCKS[name] = BlockSpec(name, kind, serves or kind, cls, _first_line(cls))
        return cls

    return deco


def register_arch(name: str, tasks: tuple[str, ...] | list[str], tiny: dict | None = None):
    """Class decorator: register an agent architecture under ``name`` for ``tasks``.

    Sets ``cls.arch`` and ``cls.tasks``. The class is built as ``cls(dims, **hparams)``; ``tiny``
    are the hparams of a small, fast instance that the generic protocol tests build (default ``{}``).
    """
    tasks = tuple(tasks)
    if not tasks or any(t not in TASK_KIND for t in tasks):
        raise ValueError(f"{name}: tasks must be a non-empty subset of {list(TASK_KIND)}, got {tasks}")
    if name in ARCHS:
        raise ValueError(f"architecture {name!r} registered twice")

    def deco(cls):
        cls.arch = name
        cls.tasks = tasks
        ARCHS[name] = ArchSpec(name, cls, tasks, _first_line(cls), dict(tiny or {}))
        return cls

    return deco


def block_spec(name: str) -> BlockSpec:
    """The registered block ``name`` (a one-line ``LinksimError`` listing the names otherwise)."""
    if name not in BLOCKS:
        raise LinksimError(f"unknown block '{name}' (known: {', '.join(sorted(BLOCKS))}, or agent:PATH)")
    return BLOCKS[name]


def arch_spec(name: str) -> ArchSpec:
    """The registered agent architecture ``name``."""
    if name not in ARCHS:
        raise LinksimError(f"unknown agent architecture {name!r} (known: {', '.join(sorted(ARCHS))})")
    return ARCHS[name]


def block_names(kind: str | None = None) -> list[str]:
    """Registered block names, optionally of one ``kind`` (``reference`` lists the limit curves)."""
    return sorted(n for n, s in BLOCKS.items() if kind is None or s.kind == kind)
