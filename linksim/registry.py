"""The one registry of linksim: block kinds, blocks, tasks, agent architectures and name
resolvers. A leaf module.

It imports none of them (as peft's ``register_peft_method``): every module registers what it
defines with a decorator when it is imported, and ``import linksim`` imports the built-in ones
once (then the ``linksim.plugins`` entry points of installed packages). Names are resolved to
blocks by :func:`linksim.blocks.get`, to tasks by :func:`task_spec`.

Block kinds and their call protocols (``b`` batch; complex tensors in the block's ``cdtype``) are
registered by the packages that hold their blocks (:func:`register_kind`); the built-in ones:

- ``precoder``:  ``(h [b,K,M], p_tx, noise_var) -> w [b,M,K]`` with ``sum |w|^2 <= p_tx`` per
  sample; user k receives ``h[:, k, :] @ w @ s``.
- ``detector``:  ``(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T]``, ``y = h @ x + n``.
- ``predictor``: ``(h_hist [b,L,...]) -> h_future [b,P,...]``.
- ``reference``: a limit curve that stands in for a block of kind ``serves`` but sees the truth;
  its protocol is that kind's inputs plus the true quantity the block would have to estimate:
  serving ``precoder``: ``(h_true [b,K,M], p_tx, noise_var) -> sum_rate [b]`` (e.g. the DPC sum
  capacity); serving ``predictor``: ``(h_hist, h_future) -> h_future`` (the genie).

``p_tx`` and ``noise_var`` are a float or a ``[b]`` tensor.

A *task* (:func:`register_task`) is one unit: the chain that builds its batches for sweeps and
training, its metrics, the block kind that serves it, its scenario table, the sizes an agent must
share, its classical references, default loss weight and LLM prompt template (see
:class:`linksim.chains.Chain`). A *trainable* task is the one task of its block kind that agents
are trained for; composite tasks (``loop``, ``coded``) reuse the blocks of others. Agent
architectures are registered with the tasks they can serve; one agent folder is usable as the
block kind of each task it was trained for. A *resolver* turns prefixed names (``agent:PATH``)
into blocks.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from .errors import LinksimError

REFERENCE = "reference"

#: block kind -> its call protocol (one line), in registration order
KINDS: dict[str, str] = {REFERENCE: "a limit curve standing in for a block of another kind; sees the truth"}


def register_kind(name: str, protocol: str) -> None:
    """Declare a block kind and its call protocol (idempotent for the same protocol)."""
    if KINDS.get(name, protocol) != protocol:
        raise ValueError(f"block kind {name!r} registered twice with different protocols")
    KINDS[name] = protocol


def block_kinds() -> tuple[str, ...]:
    """The kinds of ordinary blocks (every registered kind but ``reference``)."""
    return tuple(k for k in KINDS if k != REFERENCE)


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
    """A registered agent architecture: ``cls(dims, **hparams)``, able to serve ``tasks``; an
    agent that names no tasks serves ``default_tasks``."""

    name: str
    cls: type
    tasks: tuple[str, ...]
    doc: str
    tiny: dict = field(default_factory=dict)   # hparams of a small instance for generic tests
    default_tasks: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: ``cls(scenario)`` is its chain; ``kind`` the block kind that serves it;
    ``trainable``: agents are trained for it (the one such task of its kind)."""

    name: str
    kind: str
    cls: type
    trainable: bool
    doc: str


BLOCKS: dict[str, BlockSpec] = {}
ARCHS: dict[str, ArchSpec] = {}
TASKS: dict[str, TaskSpec] = {}
#: name prefix (``"agent:"``) -> ``loader(rest, kind, scenario, **options) -> block``
RESOLVERS: dict[str, Callable] = {}


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
    if (kind == REFERENCE) != (serves is not None) or (serves is not None and serves not in block_kinds()):
        raise ValueError(f"{name}: a reference block names the block kind it serves, other kinds do not")
    if name in BLOCKS:
        raise ValueError(f"block name {name!r} registered twice")

    def deco(cls):
        cls.kind = kind
        cls.serves = serves or kind
        BLOCKS[name] = BlockSpec(name, kind, serves or kind, cls, _first_line(cls))
        return cls

    return deco


def register_arch(name: str, tasks: tuple[str, ...] | list[str], tiny: dict | None = None,
                  default_tasks: tuple[str, ...] | None = None):
    """Class decorator: register an agent architecture under ``name`` for ``tasks``.

    Sets ``cls.arch`` and ``cls.tasks``. The class is built as ``cls(dims, **hparams)``; ``tiny``
    are the hparams of a small, fast instance that the generic protocol tests build (default ``{}``);
    ``default_tasks`` what an agent serves when its ``[agent]`` names no tasks (default ``tasks``).
    """
    tasks = tuple(tasks)
    default_tasks = tuple(default_tasks or tasks)
    if set(default_tasks) - set(tasks):
        raise ValueError(f"{name}: default_tasks must be among its tasks")
    bad = [t for t in tasks if t not in TASKS or not TASKS[t].trainable]
    if not tasks or bad:
        raise ValueError(f"{name}: tasks must be a non-empty subset of the trainable tasks "
                         f"{trainable_tasks()}, got {tasks}")
    if name in ARCHS:
        raise ValueError(f"architecture {name!r} registered twice")

    def deco(cls):
        cls.arch = name
        cls.tasks = tasks
        ARCHS[name] = ArchSpec(name, cls, tasks, _first_line(cls), dict(tiny or {}), default_tasks)
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


def register_task(name: str, kind: str, trainable: bool = True):
    """Class decorator: register a task (its chain class) under ``name``, served by ``kind`` blocks.

    Sets ``cls.task`` and ``cls.kind``. At most one trainable task per kind (the task agents of
    that kind are trained and validated on); composite tasks register ``trainable=False``.
    """
    if kind not in KINDS:
        raise ValueError(f"task {name}: unknown block kind {kind!r} (known: {', '.join(KINDS)})")
    if name in TASKS:
        raise ValueError(f"task {name!r} registered twice")
    if trainable and any(t.kind == kind and t.trainable for t in TASKS.values()):
        raise ValueError(f"task {name}: kind {kind!r} already has a trainable task")

    def deco(cls):
        cls.task = name
        cls.kind = kind
        TASKS[name] = TaskSpec(name, kind, cls, trainable, _first_line(cls))
        return cls

    return deco


def task_spec(name: str) -> TaskSpec:
    """The registered task ``name`` (a one-line ``LinksimError`` listing the tasks otherwise)."""
    if name not in TASKS:
        raise LinksimError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
    return TASKS[name]


def trainable_tasks() -> list[str]:
    """Tasks agents can be trained for, in registration order."""
    return [n for n, t in TASKS.items() if t.trainable]


def kind_of(task: str) -> str:
    """The block kind that serves ``task``."""
    return task_spec(task).kind


def task_of(kind: str) -> str:
    """The trainable task of block kind ``kind`` (what an agent used as a ``kind`` block serves)."""
    for n, t in TASKS.items():
        if t.kind == kind and t.trainable:
            return n
    raise LinksimError(f"a {kind} cannot be an agent (agents serve {', '.join(trainable_tasks())})")


def register_resolver(prefix: str, loader: Callable) -> None:
    """Resolve block names starting with ``prefix`` (e.g. ``"agent:"``) with
    ``loader(rest, kind, scenario, **options)``."""
    RESOLVERS[prefix] = loader
