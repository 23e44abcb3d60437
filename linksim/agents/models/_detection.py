"""What the trained detectors (:mod:`.detnet`, :mod:`.oampnet`, :mod:`.dnn`) share.

All three follow the detector protocol of :mod:`linksim.registry`::

    model(y [b, M, T] complex64, h [b, M, K] complex64, noise_var float | [b]) -> x_hat [b, K, T] complex64

with ``y = h @ x + n``, ``x`` from Sionna's unit-energy square QAM with ``dims.bits_per_symbol`` bits
and ``n ~ CN(0, noise_var I_M)``. The ``T`` symbol slots share ``h`` and are detected as ``T``
independent vectors (no model looks across slots). The outputs are *soft* estimates (not snapped to
the constellation; use :func:`linksim.blocks.qam.hard_decision` for decisions).

``training_loss(batch)`` takes a detection batch as documented in :mod:`linksim.agents.base`
(``y [B,M,T]``, ``h [B,M,K]``, ``noise_var [B]``, ``x [B,K,T]``; ``idx`` is not used) and returns a
scalar float32 loss.
"""
from __future__ import annotations

import torch

from ...blocks.qam import constellation_points
from ...errors import LinksimError


def check_inputs(arch: str, y: torch.Tensor, h: torch.Tensor, m: int | None = None,
                 k: int | None = None) -> None:
    """Raise a one-line error unless ``y [b,M,T]`` and ``h [b,M,K]`` fit (and match ``m``, ``k``)."""
    if y.dim() != 3 or h.dim() != 3 or y.shape[0] != h.shape[0] or y.shape[1] != h.shape[1]:
        raise LinksimError(f"{arch}: expected y [b,M,T] and h [b,M,K] with equal b and M, "
                           f"got y {tuple(y.shape)} and h {tuple(h.shape)}")
    if (m is not None and h.shape[1] != m) or (k is not None and h.shape[2] != k):
        fixed = ", ".join(f"{n}={v}" for n, v in (("M", m), ("K", k)) if v is not None)
        raise LinksimError(f"{arch}: built for {fixed}, got h {tuple(h.shape)} (M={h.shape[1]}, "
                           f"K={h.shape[2]})")


def pam_levels(num_bits_per_symbol: int) -> torch.Tensor:
    """The ``sqrt(|C|)`` levels (ascending, float32) of the real (= imaginary) PAM component."""
    pts = constellation_points(num_bits_per_symbol, "cpu")
    return torch.unique(torch.round(pts.real.double() * 1e6) / 1e6).sort().values.to(torch.float32)


def batch_tensors(batch: dict):
    """``(y, h, noise_var, x)`` of a detection batch; a missing key is a one-line error."""
    try:
        return batch["y"], batch["h"], batch["noise_var"], batch["x"]
    except KeyError as e:
        raise LinksimError(f"detection batch lacks key {e.args[0]!r} "
                           "(needs y, h, noise_var, x)") from None


def symbol_ce(x_hat: torch.Tensor, idx: torch.Tensor, num_bits_per_symbol: int,
              tau: torch.Tensor | float | None = None) -> torch.Tensor:
    r"""Symbol-level cross-entropy of soft estimates over the constellation.

    Each estimate is read as the constellation point plus complex Gaussian error of variance
    :math:`\tau`, which gives the posterior over the points :math:`c_j` and its cross-entropy:

    .. math::
        \ell = -\frac{1}{N}\sum_n \log \frac{\exp(-|\hat{x}_n - c_{i_n}|^2/\tau)}
            {\sum_j \exp(-|\hat{x}_n - c_j|^2/\tau)}

    With ``tau=None`` it is the batch's own mean squared error (detached, at least 1e-4), so the
    loss is scale-free: it rewards estimates that land in the right decision region, not only
    close ones, which is what the symbol error rate counts.

    :input x_hat: [...], complex. Soft estimates.
    :input idx: [...], int64. Indices of the sent points (``x = C[idx]``).
    :input num_bits_per_symbol: int. The QAM order (Sionna's unit-energy constellation).
    :input tau: float, [] tensor or None. The error variance.

    :output loss: [], the real dtype of ``x_hat`` (float32 for complex64).

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.agents.models._detection import symbol_ce
        from linksim.blocks.qam import random_symbols
        idx, x = random_symbols((8, 4, 6), 4)
        symbol_ce(x + 0.05 * torch.randn_like(x), idx, 4)      # small: every estimate near its point
    """
    c = constellation_points(num_bits_per_symbol, x_hat.device, x_hat.dtype)
    d = (x_hat.unsqueeze(-1) - c).abs().square()                                   # [..., |C|]
    if tau is None:
        x = c[idx]
        tau = (x_hat - x).abs().square().mean().detach().clamp_min(1e-4)
    logits = -d / tau
    return torch.nn.functional.cross_entropy(logits.reshape(-1, c.numel()), idx.reshape(-1))
