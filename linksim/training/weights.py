r"""Uncertainty-weighted multi-task loss (Kendall, Gal & Cipolla, CVPR 2018; MMSense's weighting):
``[train] loss_weights = "uncertainty"``.

Each task :math:`t` has a learned log-variance :math:`s_t`; a step minimises

.. math::
    J = \sum_t J_t, \qquad J_t = e^{-s_t} L_t + s_t \quad (L_t \ge 0),

so at the optimum in :math:`s_t`, :math:`e^{-s_t} = 1 / L_t`: a task whose loss is large (noisy,
or on a larger scale) is weighted down, and no task's weight can collapse to zero (the
:math:`+ s_t` term). The effective weight :math:`w_t = e^{-s_t}` is what ``train_log.csv``
records (metric ``loss_weight`` at each validation).

A loss that can be negative -- precoding's rate stage, :math:`L = -\text{sum-rate}` -- has no
Gaussian reading and would drive :math:`s_t \to -\infty` (its weight to infinity). There the
log-variance is fitted to the loss's magnitude instead:

.. math::
    J_t = \operatorname{sg}(e^{-s_t}) L_t + e^{-s_t} \lvert\operatorname{sg}(L_t)\rvert + s_t
    \quad (L_t < 0),

with :math:`\operatorname{sg}` the stop-gradient: the model still descends :math:`w_t \nabla L_t`,
and :math:`s_t` still settles at :math:`e^{-s_t} = 1 / \lvert L_t \rvert`. For :math:`L_t \ge 0`
both forms have the same gradients. The weights of the agent's other heads are untouched by
:math:`s_t`, which live in the trainer (:class:`UncertaintyWeights`), not in the agent.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["UNCERTAINTY", "UncertaintyWeights", "uncertainty_objective"]

UNCERTAINTY = "uncertainty"


def uncertainty_objective(loss: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    r"""One task's :math:`J_t` (see the module): ``loss`` a scalar tensor, ``log_var`` :math:`s_t`."""
    w = torch.exp(-log_var)
    if loss.detach() >= 0:
        return w * loss + log_var
    return w.detach() * loss + w * loss.detach().abs() + log_var


class UncertaintyWeights(nn.Module):
    r"""The learned log-variances :math:`s_t` of a multi-task run, one per task.

    They live in the trainer's loss module, not in the agent: only training reads them, so the
    agent's weight files stay those of its architecture (an agent trained with them loads and runs
    as one trained with fixed weights), while Accelerate's checkpoint holds them (a resumed run
    continues with the same :math:`s_t`) and Adam updates them with the model. Start:
    :math:`s_t = -\ln w^0_t` with :math:`w^0_t` the task's own ``loss_weight`` (prediction 1,
    detection 5, precoding 0.2), so the first steps are those of the fixed-weight recipe.
    ``train.grad_clip`` clips the model's gradients only (the :math:`s_t` gradients,
    :math:`1 - w_t L_t`, are O(1) and would shrink the model's step); ``train.weight_decay``
    pulls :math:`s_t` towards 0 (weight 1) as it pulls the model's parameters.

    :param initial: task -> starting weight :math:`w^0_t > 0`

    :input task: str. :input loss: scalar tensor :math:`L_t`.
    :output objective: scalar tensor :math:`J_t` (:func:`uncertainty_objective`).
    """

    def __init__(self, initial: dict[str, float]):
        super().__init__()
        bad = {t: w for t, w in initial.items() if not w > 0}
        if bad:
            raise ValueError(f"uncertainty weights must start > 0, got {bad}")
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(-math.log(w), dtype=torch.float32)) for t, w in initial.items()})

    def weight(self, task: str) -> float:
        r"""The task's current weight :math:`w_t = e^{-s_t}`."""
        return float(torch.exp(-self.log_vars[task].detach()))

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return uncertainty_objective(loss, self.log_vars[task].to(loss.device))
