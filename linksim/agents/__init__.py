"""Trained blocks stored as folders (``agent.toml`` + ``model.safetensors``), used as ``agent:PATH``.

Importing this package imports the built-in architectures (``models``) once; each registers
itself in :mod:`linksim.registry`.
"""
from . import models  # noqa: F401  (registers the built-in architectures)
from .base import AgentModel, Dims, build_model
from .load import AgentBlock, agent_tasks, load_agent
from .spec import AgentSpec, read_agent

__all__ = ["AgentBlock", "AgentModel", "AgentSpec", "Dims", "agent_tasks", "build_model",
           "load_agent", "read_agent"]
