"""One config object for seed, device and precision (as ``sionna.phy.config``)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .errors import LinksimError

_DTYPES = {"single": (torch.float32, torch.complex64), "double": (torch.float64, torch.complex128)}


@dataclass
class Config:
    """Seed, device and precision shared by every part of a run.

    ``precision`` is ``"single"`` (float32/complex64, default) or ``"double"``.
    """

    seed: int = 0
    device: str = "cpu"
    precision: str = "single"

    def __post_init__(self):
        if self.precision not in _DTYPES:
            raise LinksimError(f"precision: expected one of {sorted(_DTYPES)}, got {self.precision!r}")

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision][0]

    @property
    def cdtype(self) -> torch.dtype:
        return _DTYPES[self.precision][1]


def derive_seed(*parts) -> int:
    """A 31-bit seed from any tuple of values, independent of call order and Python's hash salt."""
    text = "|".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
