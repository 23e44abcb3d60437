"""The training harness shared by every trained agent, the multi-task LLM agent included."""
from .trainer import task_metrics, train_agent, validate

__all__ = ["task_metrics", "train_agent", "validate"]
