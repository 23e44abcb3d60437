"""The ``ray`` sweep backend: every point a Ray task, on every local core or across a cluster.

Ray is imported only when a sweep runs on this backend (``import linksim`` does not import it),
and a missing Ray is a one-line error that says how to install it.

What travels to a worker is the :class:`~linksim.sweep.plan.Plan` (names and numbers: it is put
in Ray's object store once per sweep) and the point. A worker rebuilds the chain and the blocks
from the names, so it needs linksim (same version), the agent folders (their paths are made
absolute here, so every worker must see them at the same path) and, for LLM agents, the backbone
cache (``$LINKSIM_CACHE``, passed on to the workers when set): on one machine they share the
filesystem; on a cluster, put them on a shared filesystem.

Design:

- **Tasks, not actors.** Each point is a task running :func:`~linksim.sweep.run.run_point`; Ray
  reuses worker processes, and each process keeps the :class:`~linksim.sweep.run.Workspace` of the
  last plan it ran, so blocks and agents are built once per worker and plan, as an actor pool
  would, while Ray does the load balancing, and the retries when a worker dies
  (``max_retries``): a retried point gives the same rows, since a point is a function of the
  plan and the point.
- **One writer.** The driver waits on the tasks (``ray.wait``) and hands each finished point's
  rows to the store as it finishes; the store sorts the file at the end, so the CSV does not
  depend on the order points finish in.
- **Progress.** Workers report finished drops to a small actor; the driver polls it and moves the
  one bar over all workers.
- **No chunking.** A point runs in one task: the detection stopping rule is sequential over a
  point's drops, so splitting a point would need the same rule across chunks. A slow point
  therefore sets a floor on the sweep's time.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..errors import LinksimError
from .backends import Backend, register_backend
from .run import Workspace, run_point

#: printed when Ray is not installed
NEEDS_RAY = "--backend ray needs Ray: pip install 'linksim[ray]'"

#: environment variables passed on to the workers when set in the driver
FORWARDED_ENV = ("LINKSIM_CACHE",)


def _ray():
    try:
        import ray
    except ImportError:
        raise LinksimError(NEEDS_RAY) from None
    return ray


@register_backend("ray")
class RayBackend(Backend):
    """Each point a Ray task; the driver writes the results as points finish.

    :param address: a running cluster (``HOST:6379`` or ``"auto"``, as ``ray start --head``
        prints); None starts a local cluster on this machine (or uses the one this process is
        already connected to)
    :param workers: most points running at once (default: every CPU of the cluster; a local
        cluster is started with this many CPUs)
    :param gpus_per_worker: GPUs each point task holds (a fraction shares a GPU; the scenario's
        ``run.device`` chooses where the blocks run)
    :param max_retries: times a point is run again when its worker process dies
    :param point_fn: what a worker runs instead of :func:`~linksim.sweep.run.run_point`, with its
        signature (tests use it to kill a worker in the middle of a point)

    :input plan, todo, built, on_drops, on_point: as :meth:`Backend.run`

    Example::

        from linksim.sweep import get_backend, sweep
        ray_backend = get_backend("ray", workers=2)
        sweep("scenarios/quick.toml", "detection", ["lmmse", "kbest"], "snr_db=0:20:4",
              "results/det", backend=ray_backend)      # the same results.csv as the local backend
    """

    def __init__(self, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float = 0, max_retries: int = 3, point_fn=None):
        if workers is not None and workers < 1:
            raise LinksimError(f"--workers {workers}: must be >= 1")
        if gpus_per_worker < 0:
            raise LinksimError(f"--gpus-per-worker {gpus_per_worker}: must be >= 0")
        _ray()                                   # not installed: one line, before any planning
        self.address, self.workers, self.gpus = address, workers, gpus_per_worker
        self.max_retries, self.point_fn = max_retries, point_fn

    def connect(self):
        """Join the cluster (or start a local one) once per process; returns the ``ray`` module."""
        ray = _ray()
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            opts = dict(address=self.address) if self.address else dict(num_cpus=self.workers)
            try:
                ray.init(**opts, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, runtime_env={"env_vars": env} if env else None)
            except ConnectionError as e:
                raise LinksimError(f"--address {self.address}: no Ray cluster there ({e})") from None
        return ray

    def slots(self, ray) -> int:
        """Points in flight at once: ``workers``, else what the cluster's CPUs (GPUs) allow."""
        res = ray.cluster_resources()
        if self.gpus > res.get("GPU", 0):      # such tasks would wait for ever
            raise LinksimError(f"--gpus-per-worker {self.gpus:g}: the Ray cluster has "
                               f"{res.get('GPU', 0):g} GPU(s)")
        if self.workers:
            return self.workers
        n = int(res.get("CPU", 1))
        if self.gpus:
            n = min(n, int(res["GPU"] / self.gpus))
        return max(n, 1)

    def run(self, plan, todo, built, on_drops, on_point):
        if not todo:
            return
        ray = self.connect()
        slots = self.slots(ray)
        plan = shippable(plan)
        plan_ref = ray.put(plan)
        drops = ray.remote(num_cpus=0)(drop_counter()).remote()
        task = ray.remote(_run_on_worker).options(num_cpus=1, num_gpus=self.gpus,
                                                  max_retries=self.max_retries)
        waiting, running, done = list(todo), {}, set()
        try:
            while waiting or running:
                while waiting and len(running) < slots:
                    spec, labels = waiting.pop(0)
                    running[task.remote(plan_ref, spec, labels, drops, self.point_fn)] = spec
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for index, n in ray.get(drops.take.remote()).items():
                    if index not in done:        # a report may arrive after its point's rows
                        on_drops(n, plan.points[index])
                for ref in ready:
                    spec = running.pop(ref)
                    on_point(spec, _result(ray, ref, spec))
                    done.add(spec.index)
        finally:
            for ref in running:                  # an error or Ctrl-C: stop the points in flight
                ray.cancel(ref, force=True)
            ray.kill(drops)


def shippable(plan):
    """``plan`` with every agent folder made absolute, so that a worker whose current folder is
    another one (a cluster node) finds it at the same path."""
    def absolute(name: str) -> str:
        return "+".join(f"agent:{Path(p[6:]).resolve()}" if p.startswith("agent:") else p
                        for p in name.split("+"))
    return dataclasses.replace(plan, blocks={lb: absolute(n) for lb, n in plan.blocks.items()})


def _result(ray, ref, spec):
    """A point's rows; a failed point as a one-line error (a linksim error as it was raised)."""
    from ray.exceptions import RayTaskError, WorkerCrashedError
    where = f"{spec.x_name}={spec.x:g}" if spec.x_name else "the scenario's point"
    try:
        return ray.get(ref)
    except RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, LinksimError):
            raise LinksimError(str(cause)) from None
        raise LinksimError(f"--backend ray: the point {where} failed on a worker: "
                           f"{type(cause).__name__ if cause else 'error'}: {cause}") from None
    except WorkerCrashedError:
        raise LinksimError(f"--backend ray: the worker running the point {where} died (tried "
                           "max_retries + 1 times); re-run the command to resume") from None


def drop_counter():
    """The class of the progress actor: drops finished per point, added by the workers and taken by
    the driver. Defined in a function, so that Ray ships it by value and its process starts
    without importing linksim (0.5 s instead of 5 s here)."""
    class DropCounter:
        def __init__(self):
            self.counts: dict[int, int] = {}

        def add(self, index: int, n: int) -> None:
            self.counts[index] = self.counts.get(index, 0) + n

        def take(self) -> dict[int, int]:
            counts, self.counts = self.counts, {}
            return counts
    return DropCounter


#: this worker process's workspace (the last plan it ran), kept between tasks
_workspace: list = [None, None]


def _run_on_worker(plan, spec, labels, drops, point_fn=None):
    """The body of a point task: :func:`run_point` (or ``point_fn``) with this process's
    workspace, reporting finished drops to the ``drops`` actor."""
    key = Workspace.key(plan)
    if _workspace[0] != key:
        _workspace[:] = [key, Workspace()]
    fn = point_fn or run_point
    return fn(plan, spec, labels, lambda n: drops.add.remote(spec.index, n), _workspace[1])
