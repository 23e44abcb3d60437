"""Square QAM helpers shared by detectors and chains (Sionna's constellation and bit labels).

The constellation is Sionna's ``Constellation("qam", num_bits_per_symbol)``: unit average energy,
Gray labelled; the bit label of point ``i`` is the binary representation of ``i`` with the most
significant bit first (exactly what Sionna's ``Mapper`` computes from bits).
"""
from __future__ import annotations

import functools

import torch

from ..errors import LinksimError


def _check_bits(num_bits_per_symbol: int) -> int:
    n = int(num_bits_per_symbol)
    if n <= 0 or n % 2 or n != num_bits_per_symbol:
        raise LinksimError(f"num_bits_per_symbol must be a positive even integer (square QAM), "
                           f"got {num_bits_per_symbol!r}")
    return n


@functools.lru_cache(maxsize=None)
def _tables(num_bits_per_symbol: int, device: str):
    """(points [2^n] complex64, levels [sqrt(2^n)] float32, grid2index [s, s] int64)."""
    from sionna.phy.mapping import Constellation

    n = _check_bits(num_bits_per_symbol)
    pts = Constellation("qam", n, device=device)().detach().to(torch.complex64).to(device)
    side = 2 ** (n // 2)
    levels = torch.unique(torch.round(pts.real * 1e5) / 1e5).sort().values.to(torch.float32)
    if levels.numel() != side:
        raise AssertionError("Sionna QAM constellation is not a square grid")
    # index of the Sionna point at grid position (real level i, imag level j)
    d_re = (pts.real[:, None] - levels[None, :]).abs().argmin(-1)     # [2^n]
    d_im = (pts.imag[:, None] - levels[None, :]).abs().argmin(-1)
    grid = torch.full((side, side), -1, dtype=torch.int64, device=device)
    grid[d_re, d_im] = torch.arange(pts.numel(), device=device)
    if (grid < 0).any():
        raise AssertionError("Sionna QAM constellation does not fill its grid")
    labels = ((torch.arange(2 ** n, device=device)[:, None]
               >> torch.arange(n - 1, -1, -1, device=device)[None, :]) & 1).to(torch.int64)
    return pts, levels.to(device), grid, labels


def constellation_points(num_bits_per_symbol: int = 4, device: str | torch.device = "cpu") -> torch.Tensor:
    """Sionna's normalised square-QAM points, complex64 ``[2**num_bits_per_symbol]`` (index = label)."""
    return _tables(int(num_bits_per_symbol), str(torch.device(device)))[0]


def hard_decision(x_hat: torch.Tensor, num_bits_per_symbol: int = 4
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest constellation point (Euclidean distance) of every entry.

    Square QAM is a product of two PAM grids, so the nearest point is found per axis (round to the
    nearest level, clipped to the outermost one) and looked up in a table built from Sionna's points;
    this is the same as an argmin over all points, without the ``[..., 2^n]`` distance tensor.

    :param x_hat: complex ``[...]`` (any shape) soft estimates
    :param num_bits_per_symbol: bits per QAM symbol (2, 4, 6, 8, ...)
    :returns: ``(indices int64 [...], points complex64 [...])`` with ``points = C[indices]``
    """
    pts, levels, grid, _ = _tables(int(num_bits_per_symbol), str(x_hat.device))
    x = x_hat.to(torch.complex64)
    side = levels.numel()
    step = (levels[-1] - levels[0]) / (side - 1)
    i_re = torch.round((x.real - levels[0]) / step).clamp_(0, side - 1).to(torch.int64)
    i_im = torch.round((x.imag - levels[0]) / step).clamp_(0, side - 1).to(torch.int64)
    idx = grid[i_re, i_im]
    return idx, pts[idx]


def symbols_to_bits(indices: torch.Tensor, num_bits_per_symbol: int = 4) -> torch.Tensor:
    """Bit labels of symbol indices (Sionna's labelling, MSB first, as ``Mapper``/``SymbolInds2Bits``).

    :param indices: integer ``[...]`` symbol indices in ``[0, 2**num_bits_per_symbol)``
    :returns: int64 ``[..., num_bits_per_symbol]`` of 0/1
    """
    labels = _tables(int(num_bits_per_symbol), str(indices.device))[3]
    return labels[indices.to(torch.int64)]


def bits_to_symbols(bits: torch.Tensor, num_bits_per_symbol: int = 4
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`symbols_to_bits`: ``bits [..., n]`` -> ``(indices int64 [...], points complex64 [...])``."""
    n = int(num_bits_per_symbol)
    pts = _tables(n, str(bits.device))[0]
    weights = 2 ** torch.arange(n - 1, -1, -1, device=bits.device, dtype=torch.int64)
    idx = (bits.to(torch.int64) * weights).sum(-1)
    return idx, pts[idx]


def random_symbols(shape, num_bits_per_symbol: int = 4, generator: torch.Generator | None = None,
                   device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform i.i.d. QAM symbols.

    :param shape: output shape (tuple or ``torch.Size``)
    :param num_bits_per_symbol: bits per QAM symbol
    :param generator: ``torch.Generator`` for reproducibility (its device is used by default)
    :returns: ``(indices int64 [shape], points complex64 [shape])``
    """
    n = _check_bits(num_bits_per_symbol)
    if device is None:
        device = generator.device if generator is not None else "cpu"
    idx = torch.randint(0, 2 ** n, tuple(shape), generator=generator, device=device)
    return idx, constellation_points(n, device)[idx]


def num_points(num_bits_per_symbol: int) -> int:
    """``2 ** num_bits_per_symbol``."""
    return 2 ** int(num_bits_per_symbol)


def qam_name(num_bits_per_symbol: int) -> str:
    """'QPSK' for 2 bits, else e.g. '16-QAM'."""
    return "QPSK" if num_bits_per_symbol == 2 else f"{2 ** int(num_bits_per_symbol)}-QAM"


__all__ = ["constellation_points", "hard_decision", "symbols_to_bits", "bits_to_symbols",
           "random_symbols", "num_points", "qam_name"]
