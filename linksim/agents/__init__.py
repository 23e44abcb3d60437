"""Trained blocks stored as folders (``agent.toml`` + ``model.safetensors``), used as ``agent:PATH``."""
from __future__ import annotations

import hashlib

import torch

from ..errors import LinksimError
from .base import MODELS, TASK_KIND, Dims, build_model, register_model
from .spec import read_agent

# the sizes an agent must share with the scenario it runs in, per task
_MUST_MATCH = {
    "detection": ("num_bs_antennas", "num_users", "bits_per_symbol"),
    "precoding": ("num_bs_antennas", "num_users"),
    "prediction": ("num_subcarriers", "history", "horizon"),   # per-antenna: any M and K
}


class AgentBlock(torch.nn.Module):
    """A trained model used as a block: inference only (no autograd), protocol of its task."""

    def __init__(self, model: torch.nn.Module, name: str, fingerprint: str = ""):
        super().__init__()
        self.model = model.eval()
        self.name = name
        self.fingerprint = fingerprint   # SHA-256 (16 hex) of the weights file

    @torch.no_grad()
    def forward(self, *args):
        return self.model(*args)


def load_agent(path: str, kind: str, scenario) -> AgentBlock:
    """Load ``path`` as a block of ``kind`` (detector/precoder/predictor) for ``scenario``.

    Everything is checked before any compute: agent.toml, the task, the sizes the weights were
    trained for against the scenario, and the weights file.
    """
    from safetensors.torch import load_model

    from . import models  # noqa: F401  (registers the kinds)

    spec = read_agent(path)
    if spec.kind not in MODELS:
        raise LinksimError(f"agent:{path}: unknown kind {spec.kind!r} (known: {', '.join(sorted(MODELS))})")
    task = MODELS[spec.kind][1]
    if TASK_KIND[task] != kind:
        raise LinksimError(f"agent:{path} is a {TASK_KIND[task]} ({spec.kind}); this task needs a {kind}")
    if not spec.weights.is_file() or "dims" not in spec.result:
        raise LinksimError(f"agent:{path}: not trained yet (no {spec.weights.name}); run `linksim train {path}`")
    trained = Dims(**spec.result["dims"])
    wanted = Dims.from_scenario(scenario, task)
    diff = [f"{k}={getattr(trained, k)} (scenario: {getattr(wanted, k)})"
            for k in _MUST_MATCH[task] if getattr(trained, k) != getattr(wanted, k)]
    if diff:
        raise LinksimError(f"agent:{path}: trained for other sizes than {scenario.path}: {', '.join(diff)}")
    model = build_model(spec.kind, trained, spec.model)
    try:
        load_model(model, str(spec.weights), strict=True)
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise LinksimError(f"agent:{path}: {spec.weights.name} does not fit kind {spec.kind!r} ({first})") from None
    digest = hashlib.sha256(spec.weights.read_bytes()).hexdigest()[:16]
    return AgentBlock(model, spec.path.name, digest)


__all__ = ["AgentBlock", "Dims", "MODELS", "load_agent", "read_agent", "register_model"]
