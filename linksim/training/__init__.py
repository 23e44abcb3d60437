"""The training harness shared by every trained block (and later the LLM agent)."""
from .trainer import task_metrics, train_agent, validate

__all__ = ["task_metrics", "train_agent", "validate"]
