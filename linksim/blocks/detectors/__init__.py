r"""Classical uplink MIMO detectors (Sionna's equalisers and tree searches) as detector blocks.

Every registered detector maps ``(y [b,M,T], h [b,M,K], noise_var) -> x_hat [b,K,T]`` for

.. math::
    \mathbf{y} = \mathbf{H}\mathbf{x} + \mathbf{n}, \qquad
    \mathbf{x}\in\mathcal{C}^K, \quad \mathbf{n}\sim\mathcal{CN}(\mathbf{0}, \sigma^2\mathbf{I}_M)

(one :math:`\mathbf{H}` for the ``T`` slots; :math:`\mathcal{C}` Sionna's unit-energy square QAM,
see :mod:`linksim.blocks.qam`, whose symbol helpers are re-exported here). ``lmmse``, ``zf_det``
and ``mf`` return unbiased soft estimates, ``kbest`` and ``ml`` hard decisions.

Modules: :mod:`.base` (input checks, :func:`noise_vector`, the shared constructor), :mod:`.linear`
(``lmmse``, ``zf_det``, ``mf``), :mod:`.tree` (``kbest``, ``ml``). Importing the package registers
them all.
"""
from __future__ import annotations

from ..qam import constellation_points, hard_decision, random_symbols, symbols_to_bits
from .base import noise_vector
from .linear import LMMSEDetector, MFDetector, ZFDetector
from .tree import ML_MAX_EVALUATIONS, ML_MAX_HYPOTHESES, KBestDetector, MLDetector

__all__ = ["LMMSEDetector", "ZFDetector", "MFDetector", "KBestDetector", "MLDetector",
           "ML_MAX_EVALUATIONS", "ML_MAX_HYPOTHESES", "noise_vector", "hard_decision", "symbols_to_bits",
           "random_symbols", "constellation_points"]
