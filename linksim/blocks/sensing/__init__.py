r"""Classical blocks of the sensing tasks (``los``, ``beam``, ``pathloss``, ``position``).

One package for the four kinds rather than one per kind: their blocks share the input protocol
(a dict of modalities, :mod:`linksim.channel.modalities`), the DFT codebook of the BS array, the
TR 38.901 UMa formulas and the fitting on labelled training drops (:mod:`.base`), and each kind
has only one to three blocks.

Every block is called as ``block(obs)`` with ``obs`` the dict of the modalities its task's table
lists (``csi`` [b,K,M,F], ``csi_history`` [b,L,K,M,F], ``gnss`` [b,K,2] m, ``rsrp`` [b,K,M] dB)
plus the system information ``bs_orientation`` [b,3] rad and ``bs_height`` [b] m; a reference
block as ``block(obs, truth)``:

- ``los_classifier``: ``(obs) -> p_los [b,K]`` in [0, 1] (LOS decided when > 0.5): ``kfactor``;
- ``beam_selector``: ``(obs) -> scores [b,K,B]`` over the task's codebook (the best-scored beam
  is used): ``last_beam``; reference ``beam_search`` ``(obs, gains) -> gains``;
- ``pathloss_estimator``: ``(obs) -> G [b,K]`` dB, ``G = -PL + SF``: ``uma_formula``,
  ``rsrp_power``;
- ``positioner``: ``(obs) -> xy [b,K,2]`` m relative to the BS: ``angle_power``, ``knn``,
  ``gnss_report``.

A block that needs a modality its task's table does not list refuses the scenario in one line
before any compute (``check_scenario``).
"""
from ...registry import register_kind

register_kind("los_classifier", "(obs {modality: [b,K,...]}) -> p_los [b,K]")
register_kind("beam_selector", "(obs {modality: [b,K,...]}) -> beam scores [b,K,B]")
register_kind("pathloss_estimator", "(obs {modality: [b,K,...]}) -> large-scale gain [b,K] dB")
register_kind("positioner", "(obs {modality: [b,K,...]}) -> position [b,K,2] m")

from .beam import BeamSearch, LastBeam  # noqa: E402
from .los import KFactorThreshold, kfactor_db  # noqa: E402
from .pathloss import RsrpPower, UmaFormula, uma_pathloss_db  # noqa: E402
from .position import AnglePower, GnssReport, KNNFingerprint  # noqa: E402

__all__ = ["AnglePower", "BeamSearch", "GnssReport", "KFactorThreshold", "KNNFingerprint", "LastBeam",
           "RsrpPower", "UmaFormula", "kfactor_db", "uma_pathloss_db"]
