"""Multi-user MISO downlink precoders, the DPC sum-capacity bound, and the rate helpers.

Modules: :mod:`.rates` (:func:`sinr`, :func:`sum_rate`, shared helpers), :mod:`.structure` (the
optimal-structure map :func:`structured_beamformer` and :func:`wmmse_p_lambda`), :mod:`.linear`
(``zf``, ``rzf``, ``mrt``), :mod:`.wmmse` (``wmmse``), :mod:`.wmmse_best` (``wmmse_best``: WMMSE
from several starts, best per sample), :mod:`.dpc` (``dpc_bound``, :func:`waterfill`).

Conventions (as in Sionna and :mod:`linksim.registry`):

- ``h`` ``[b, K, M]`` complex is the downlink channel: row ``h[:, k, :]`` (written ``h_k``, a
  ``1 x M`` row) is user k's channel from the M base-station antennas.
- ``w`` ``[b, M, K]`` complex is the precoder: column ``w[:, :, k]`` (``w_k``) carries user k's
  unit-energy symbol. User k receives ``y_k = h_k w s + n_k`` with ``n_k ~ CN(0, noise_var)``.
- ``p_tx`` and ``noise_var`` are a Python float, a 0-d tensor, or a ``[b]`` tensor (one value per
  sample). The power budget is total (sum) power: ``sum |w|^2 <= p_tx`` per sample.

Every precoder is a :class:`~linksim.blocks.base.Block` (``precision``, ``device``) called as
``precoder(h, p_tx, noise_var) -> w``; it casts its inputs on entry, computes internally in
complex128 and returns its ``cdtype`` (complex64 in single precision, complex128 in double). All
blocks are vectorised over the batch. Closed-form precoders (``zf``, ``rzf``, ``mrt``) and
:func:`structured_beamformer` are differentiable; ``wmmse``, ``wmmse_best`` and ``dpc_bound`` are
iterative and run under ``torch.no_grad()``. Rates and the DPC capacity are float64.

Implementation note: every precoder here lies in the row space of ``h``, ``W = h^H T`` with a small
``T [b, K, K]`` (this holds for ZF/RZF/MRT, for every WMMSE iterate, and for the optimal structure).
The iterative algorithms therefore work on the Gram matrix ``G = h h^H [b, K, K]`` only, so their
cost per iteration does not grow with M.
"""
from __future__ import annotations

from ...registry import register_kind

register_kind("precoder", "(h [b,K,M], p_tx, noise_var) -> w [b,M,K], sum |w|^2 <= p_tx per sample")

from . import dpc, linear, rates, structure, wmmse, wmmse_best  # noqa: F401  (register the blocks)
from .dpc import DPCBound, waterfill  # noqa: E402
from .linear import MRT, RZF, ZF
from .rates import per_sample, sinr, sum_rate
from .structure import structured_beamformer, wmmse_p_lambda
from .wmmse import WMMSE
from .wmmse_best import WMMSEBest

__all__ = [
    "sinr", "sum_rate", "per_sample", "structured_beamformer", "wmmse_p_lambda", "waterfill",
    "ZF", "RZF", "MRT", "WMMSE", "WMMSEBest", "DPCBound",
]
