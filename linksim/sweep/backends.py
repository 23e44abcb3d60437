"""Where sweep points run. A backend takes a plan and the points still to do, runs
:func:`~linksim.sweep.run.run_point` for each, and hands every finished point's rows back to the
driver, which alone writes the results store.

- ``local`` (default): one process, points in order, blocks built once.
- ``ray`` (:mod:`~linksim.sweep.ray_backend`): each point a Ray task, on every local core or a
  cluster; Ray is imported only when it runs.

A backend that runs points in other processes needs only what a
:class:`~linksim.sweep.plan.Plan` holds: names and numbers (it pickles), agent folders and the
backbone cache readable where the point runs. Sionna's seed is process-wide, so parallel points
need processes, not threads.
"""
from __future__ import annotations

import inspect
from typing import Callable

from ..errors import LinksimError
from .plan import Plan, PointSpec
from .run import Workspace, run_point

#: name -> backend class
BACKENDS: dict[str, type] = {}


def register_backend(name: str):
    """Class decorator: register a sweep backend under ``name``."""
    def deco(cls):
        cls.name = name
        BACKENDS[name] = cls
        return cls
    return deco


def get_backend(name: str, **options) -> "Backend":
    """The backend ``name`` (``--backend``), built with ``options``; an option the backend does
    not take is refused in one line (e.g. ``--workers`` with ``--backend local``)."""
    if name not in BACKENDS:
        raise LinksimError(f"--backend {name!r}: choose from {', '.join(BACKENDS)}")
    cls = BACKENDS[name]
    try:
        inspect.signature(cls).bind(**options)
    except TypeError:
        taken = set(inspect.signature(cls).parameters)
        extra = ", ".join("--" + k.replace("_", "-") for k in options if k not in taken)
        raise LinksimError(f"--backend {name} does not take {extra}") from None
    return cls(**options)


class Backend:
    """Runs points; subclasses implement :meth:`run`."""

    name = ""

    def run(self, plan: Plan, todo: list[tuple[PointSpec, list[str]]], built: dict,
            on_drops: Callable[[int], None], on_point: Callable[[PointSpec, list[dict]], None]) -> None:
        """Run every ``(point, labels)`` of ``todo``; call ``on_drops(n, point)`` as drops finish
        and ``on_point(point, rows)`` in this (the driver's) process as each point finishes. A
        backend that runs one point at a time may call ``on_drops(n)`` without the point.

        :param built: label -> blocks the plan built for its checks (a backend may reuse them)
        """
        raise NotImplementedError


@register_backend("local")
class LocalBackend(Backend):
    """Every point in this process, in order, with the plan's blocks built once."""

    def run(self, plan, todo, built, on_drops, on_point):
        ws = Workspace(plan, built)
        for spec, labels in todo:
            on_point(spec, run_point(plan, spec, labels, progress=on_drops, workspace=ws))


from . import ray_backend  # noqa: E402,F401  (registers "ray"; imports Ray only when it runs)
