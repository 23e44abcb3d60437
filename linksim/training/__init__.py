"""The training harness shared by every trained block (and later the LLM agent)."""
from .trainer import train_agent, validate

__all__ = ["train_agent", "validate"]
