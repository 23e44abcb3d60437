"""One config for seed, device and precision (as ``sionna.phy.config``), and seeded randomness.

``linksim.config`` is the singleton: blocks built without explicit ``precision``/``device`` take
them from it. A scenario's ``[run]`` table (``seed``, ``device``, ``precision``) is applied by
the chains and by :func:`linksim.blocks.get` when a scenario is given, so a sweep never depends on
the singleton's state.

Example::

    import linksim
    linksim.config.device = "cpu"          # or "cuda"
    linksim.config.precision = "double"    # complex128 blocks from now on
    zf = linksim.blocks.get("zf")          # zf.cdtype == torch.complex128
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .errors import LinksimError

PRECISIONS = {"single": (torch.float32, torch.complex64), "double": (torch.float64, torch.complex128)}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise LinksimError(f"precision: expected one of {sorted(PRECISIONS)}, got {precision!r}")
    return precision


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; a one-line error when it is not usable here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LinksimError(f"device: {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LinksimError(f"device: {device!r} requested but CUDA is not available on this machine")
    return dev


def dtypes(precision: str) -> tuple[torch.dtype, torch.dtype]:
    """``(real dtype, complex dtype)`` of a precision ("single" or "double")."""
    return PRECISIONS[check_precision(precision)]


class Config:
    """Seed, device and precision shared by every part of a run.

    :param seed: base seed (int >= 0)
    :param device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    :param precision: ``"single"`` (float32/complex64, default) or ``"double"`` (float64/complex128)
    """

    def __init__(self, seed: int = 0, device: str = "cpu", precision: str = "single"):
        self.seed = seed
        self.device = device
        self.precision = precision

    @property
    def device(self) -> torch.device:
        return self._device

    @device.setter
    def device(self, value) -> None:
        self._device = check_device(value)

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    @property
    def dtype(self) -> torch.dtype:
        return dtypes(self.precision)[0]

    @property
    def cdtype(self) -> torch.dtype:
        return dtypes(self.precision)[1]

    def __repr__(self) -> str:
        return f"Config(seed={self.seed}, device={str(self.device)!r}, precision={self.precision!r})"


#: the singleton (``linksim.config``)
config = Config()


def derive_seed(*parts) -> int:
    """A 31-bit seed from any tuple of values, independent of call order and Python's hash salt."""
    text = "|".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (CPU streams are what results/ holds)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def cache_root() -> Path:
    """The linksim cache folder: ``$LINKSIM_CACHE`` if set, else ``~/.cache/linksim`` (converted
    backbones, content hashes, fitted covariances; never anything that identifies results)."""
    return Path(os.environ.get("LINKSIM_CACHE") or Path.home() / ".cache" / "linksim").expanduser()
