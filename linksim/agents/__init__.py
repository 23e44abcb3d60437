"""Trained blocks stored as folders (``agent.toml`` + safetensors), used as ``agent:PATH``."""
from __future__ import annotations

from pathlib import Path

from ..errors import LinksimError


def load_agent(path: str, kind: str, scenario):
    """Load the agent in folder ``path`` as a block of ``kind`` for ``scenario``.

    Checks the folder before any compute. Agent kinds are added by the trained-baselines work;
    until one is registered for ``kind`` this fails with a clear message.
    """
    p = Path(path)
    if not (p / "agent.toml").is_file():
        raise LinksimError(f"agent:{path}: no agent.toml in {p}")
    raise LinksimError(f"agent:{path}: no trained agent kind is installed for {kind}s yet")
