r"""Square QAM helpers shared by detectors and chains (Sionna's constellation and bit labels).

The constellation :math:`\mathcal{C}` is Sionna's ``Constellation("qam", num_bits_per_symbol)``:
unit average energy, Gray labelled; the bit label of point :math:`i` is the binary
representation of :math:`i` with the most significant bit first (exactly what Sionna's
``Mapper`` computes from bits). Points are complex64 by default, complex128 for
``dtype=torch.complex128`` (built by Sionna in double precision, not widened from single).
"""
from __future__ import annotations

import functools

import torch

from ..errors import LinksimError

_PRECISION = {torch.complex64: "single", torch.complex128: "double"}


def _check_bits(num_bits_per_symbol: int) -> int:
    n = int(num_bits_per_symbol)
    if n <= 0 or n % 2 or n != num_bits_per_symbol:
        raise LinksimError(f"num_bits_per_symbol must be a positive even integer (square QAM), "
                           f"got {num_bits_per_symbol!r}")
    return n


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _PRECISION:
        raise LinksimError(f"QAM points: dtype must be torch.complex64 or torch.complex128, got {dtype!r}")
    return dtype


@functools.lru_cache(maxsize=None)
def _tables(num_bits_per_symbol: int, device: str, dtype: torch.dtype = torch.complex64):
    """(points [2^n] dtype, levels [sqrt(2^n)] real, grid2index [s, s] int64, labels [2^n, n] int64)."""
    from sionna.phy.mapping import Constellation

    n = _check_bits(num_bits_per_symbol)
    pts = Constellation("qam", n, precision=_PRECISION[_check_dtype(dtype)], device=device)()
    pts = pts.detach().to(dtype=dtype, device=device)
    side = 2 ** (n // 2)
    levels = torch.unique(torch.round(pts.real * 1e5) / 1e5).sort().values.to(pts.real.dtype)
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


def constellation_points(num_bits_per_symbol: int = 4, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    r"""Sionna's normalised square-QAM constellation :math:`\mathcal{C}`, indexed by label.

    .. math::
        \mathcal{C} = \{c_0, \dots, c_{2^n-1}\}, \qquad \frac{1}{2^n}\sum_i |c_i|^2 = 1

    with :math:`n` = ``num_bits_per_symbol`` and the bits of :math:`i` (MSB first) the label of
    :math:`c_i`. The table is cached per (``n``, device, dtype): do not modify it in place.

    :param num_bits_per_symbol: bits per QAM symbol :math:`n` (2, 4, 6, ...)
    :param device: where the points live
    :param dtype: ``torch.complex64`` (default) or ``torch.complex128``

    :output points: [2**num_bits_per_symbol], ``dtype``. The points, ``points[i]`` = :math:`c_i`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.qam import constellation_points
        c = constellation_points(4)                              # [16] complex64
        c2 = constellation_points(4, dtype=torch.complex128)     # [16] complex128
        assert abs(c.abs().square().mean().item() - 1) < 1e-6
    """
    return _tables(int(num_bits_per_symbol), str(torch.device(device)), _check_dtype(dtype))[0]


def hard_decision(x_hat: torch.Tensor, num_bits_per_symbol: int = 4
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Nearest constellation point (Euclidean distance) of every entry.

    .. math::
        \hat{\imath} = \mathop{\mathrm{argmin}}_{i} |\hat{x} - c_i|^2, \qquad \hat{c} = c_{\hat{\imath}}

    Square QAM is a product of two PAM grids, so the nearest point is found per axis (round to
    the nearest level, clipped to the outermost one) and looked up in a table built from Sionna's
    points; this is the same as an argmin over all points, without the ``[..., 2^n]`` distance
    tensor. complex128 inputs are decided in double precision; anything else in single.

    :input x_hat: [...], complex (or real). Soft symbol estimates :math:`\hat{x}`, any shape.
    :input num_bits_per_symbol: int. Bits per QAM symbol (2, 4, 6, 8, ...).

    :output indices: [...], torch.int64. Index :math:`\hat{\imath}` of the nearest point.
    :output points: [...], complex128 for complex128 ``x_hat``, else complex64. The nearest
        point :math:`c_{\hat{\imath}}`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.qam import hard_decision, random_symbols
        idx, x = random_symbols((100,), 4, torch.Generator().manual_seed(0))
        idx_hat, x_dec = hard_decision(x + 0.05 * torch.randn(100, dtype=torch.complex64), 4)
        assert torch.equal(idx_hat, idx)
    """
    dtype = torch.complex128 if x_hat.dtype == torch.complex128 else torch.complex64
    pts, levels, grid, _ = _tables(int(num_bits_per_symbol), str(x_hat.device), dtype)
    x = x_hat.to(dtype)
    side = levels.numel()
    step = (levels[-1] - levels[0]) / (side - 1)
    i_re = torch.round((x.real - levels[0]) / step).clamp_(0, side - 1).to(torch.int64)
    i_im = torch.round((x.imag - levels[0]) / step).clamp_(0, side - 1).to(torch.int64)
    idx = grid[i_re, i_im]
    return idx, pts[idx]


def symbols_to_bits(indices: torch.Tensor, num_bits_per_symbol: int = 4) -> torch.Tensor:
    r"""Bit labels of symbol indices (Sionna's labelling, MSB first, as ``Mapper``/``SymbolInds2Bits``).

    .. math::
        i = \sum_{j=0}^{n-1} b_j\, 2^{\,n-1-j}

    :input indices: [...], integer. Symbol indices :math:`i` in ``[0, 2**num_bits_per_symbol)``.
    :input num_bits_per_symbol: int. Bits per QAM symbol :math:`n`.

    :output bits: [..., num_bits_per_symbol], torch.int64. The 0/1 label :math:`b_0 \dots b_{n-1}`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.qam import symbols_to_bits
        symbols_to_bits(torch.tensor([0, 5, 15]), 4)
        # tensor([[0, 0, 0, 0], [0, 1, 0, 1], [1, 1, 1, 1]])
    """
    labels = _tables(int(num_bits_per_symbol), str(indices.device), torch.complex64)[3]
    return labels[indices.to(torch.int64)]


def random_symbols(shape, num_bits_per_symbol: int = 4, generator: torch.Generator | None = None,
                   device: str | torch.device | None = None, dtype: torch.dtype = torch.complex64
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Uniform i.i.d. QAM symbols.

    .. math::
        i \sim \mathcal{U}\{0, \dots, 2^n-1\}, \qquad x = c_i \in \mathcal{C}

    The indices are drawn with ``torch.randint`` on ``device``, so a seeded ``generator`` gives
    the same symbols for either ``dtype`` (complex128 points are Sionna's, computed in double).

    :input shape: tuple or ``torch.Size``. Output shape.
    :input num_bits_per_symbol: int. Bits per QAM symbol :math:`n`.
    :input generator: ``torch.Generator`` or ``None``. Source of randomness (its device is used
        when ``device`` is ``None``; ``"cpu"`` without a generator).
    :input device: str, torch.device or ``None``. Where the symbols are drawn and live.
    :input dtype: ``torch.complex64`` (default) or ``torch.complex128``. Dtype of the points.

    :output indices: [shape], torch.int64. Symbol indices :math:`i`.
    :output points: [shape], ``dtype``. The symbols :math:`x = c_i`.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.blocks.qam import random_symbols
        idx, x = random_symbols((8, 4, 10), 4, torch.Generator().manual_seed(0))   # [8, 4, 10]
        _, x2 = random_symbols((8, 4, 10), 4, torch.Generator().manual_seed(0),
                               dtype=torch.complex128)
        assert (x2 - x).abs().max() < 1e-6            # same symbols, more exact points
    """
    n = _check_bits(num_bits_per_symbol)
    if device is None:
        device = generator.device if generator is not None else "cpu"
    idx = torch.randint(0, 2 ** n, tuple(shape), generator=generator, device=device)
    return idx, constellation_points(n, device, dtype)[idx]


def qam_name(num_bits_per_symbol: int) -> str:
    r"""Display name of the constellation: ``"QPSK"`` for 2 bits, else e.g. ``"16-QAM"``.

    :input num_bits_per_symbol: int. Bits per symbol :math:`n`.

    :output name: str. ``"QPSK"`` or ``f"{2**n}-QAM"``.

    .. rubric:: Examples

    .. code-block:: python

        from linksim.blocks.qam import qam_name
        assert qam_name(2) == "QPSK" and qam_name(4) == "16-QAM"
    """
    return "QPSK" if num_bits_per_symbol == 2 else f"{2 ** int(num_bits_per_symbol)}-QAM"


__all__ = ["constellation_points", "hard_decision", "symbols_to_bits", "random_symbols",
           "qam_name"]
