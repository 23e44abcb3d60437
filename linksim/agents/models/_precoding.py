r"""What the trained precoders (the CNN, the LLM agent's precoding head) share: the two-stage loss
on the optimal beamforming structure.

Both predict the structure parameters :math:`(\mathbf{p}, \boldsymbol\lambda)` (each positive,
summing to :math:`P`) and map them to beams with
:func:`~linksim.blocks.precoders.structured_beamformer`.
"""
from __future__ import annotations

import torch

from ...blocks.precoders import per_sample, sum_rate
from ...errors import LinksimError


def structure_loss(p_lambda, precode, batch: dict, who: str) -> torch.Tensor:
    r"""The loss of one precoding batch (keys in :mod:`linksim.agents.base`).

    - ``stage = "labels"``: the MSE over the ``2K`` normalised parameters
      :math:`(\mathbf{p}/P, \boldsymbol\lambda/P)` against
      :math:`(\mathbf{p}_{\text{ref}}/\sum \mathbf{p}_{\text{ref}}, \boldsymbol\lambda_{\text{ref}}/P)`
      (WMMSE's; it uses full power, and normalising by the sum makes the label independent of that);
    - ``stage = "rate"``: :math:`-\operatorname{mean}(\text{sum-rate})` in bit/s/Hz.

    :param p_lambda: ``(h, p_tx, noise_var) -> (p [b,K], lam [b,K])`` float32
    :param precode: ``(h, p_tx, noise_var) -> w [b,M,K]``
    :param batch: a precoding training batch
    :param who: the model's name, for the error on an unknown stage
    :output loss: [], float32
    """
    stage = batch.get("stage", "labels")
    h, ptx, s2 = batch["h"], batch["p_tx"], batch["noise_var"]
    if stage == "labels":
        p, lam = p_lambda(h, ptx, s2)
        pt = per_sample(ptx, p.shape[0], p.device).to(torch.float32)[:, None]
        p_ref = batch["p_ref"].to(device=p.device, dtype=torch.float32)
        lam_ref = batch["lam_ref"].to(device=p.device, dtype=torch.float32)
        tgt = torch.cat([p_ref / p_ref.sum(-1, keepdim=True).clamp_min(1e-30), lam_ref / pt], -1)
        return torch.mean((torch.cat([p / pt, lam / pt], -1) - tgt) ** 2)
    if stage == "rate":
        w = precode(h, ptx, s2)
        return -sum_rate(h.to(w.device), w, s2).mean().to(torch.float32)
    raise LinksimError(f"{who}: unknown training stage {stage!r} (use 'labels' or 'rate')")


def p_lambda_from_logits(a: torch.Tensor, b: torch.Tensor, p_tx: torch.Tensor):
    r"""The structure parameters from two logit vectors per sample:
    :math:`\mathbf{p} = P\operatorname{softmax}(\mathbf{a})`,
    :math:`\boldsymbol\lambda = P\operatorname{softmax}(\mathbf{b})` (each positive, summing to P).

    :input a, b: [b, K], float. Logits of the powers and of the dual variables.
    :input p_tx: [b], float. The power budget :math:`P` per sample.
    :output p, lam: [b, K], float32.
    """
    scale = p_tx.to(torch.float32)[:, None]
    return scale * torch.softmax(a, -1), scale * torch.softmax(b, -1)

