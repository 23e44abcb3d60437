"""Tasks: one module each, holding the task's chain (batches, metrics) and its declarations
(:class:`~linksim.chains.base.Chain`); each registers itself (:func:`linksim.registry.register_task`)
and its scenario table. Adding a task adds a module here (or in a plugin package).

The import order is the order of the scenario tables, which enters the scenario hash."""
from . import prediction, precoding, detection, coded, loop  # noqa: F401  (register; order matters)
from . import los, beam, pathloss, position  # noqa: F401,E402  (the sensing tasks, after: their tables last)
from .base import SWEEP_PARAMS, ChannelCache, Chain, Dims, Point
from .coded import CodedChain
from .detection import DetectionChain
from .loop import LoopBlock, LoopChain
from .precoding import PrecodingChain
from .prediction import PredictionChain

__all__ = ["SWEEP_PARAMS", "ChannelCache", "Chain", "CodedChain", "DetectionChain", "Dims", "LoopBlock",
           "LoopChain", "Point", "PrecodingChain", "PredictionChain", "chain_class"]


def chain_class(task: str) -> type:
    """The chain class of the registered task ``task`` (a one-line error listing the tasks)."""
    from ..registry import task_spec
    return task_spec(task).cls
