"""Chains: one per task, each runs blocks at a sweep point and returns metric accumulators."""
from .base import SWEEP_PARAMS, ChannelCache, Chain, Point
from .coded import CodedChain
from .detection import DetectionChain
from .loop import LoopBlock, LoopChain
from .precoding import PrecodingChain
from .prediction import PredictionChain

CHAINS = {c.task: c for c in (PredictionChain, PrecodingChain, DetectionChain, LoopChain, CodedChain)}

__all__ = ["CHAINS", "SWEEP_PARAMS", "ChannelCache", "Chain", "LoopBlock", "Point"]
