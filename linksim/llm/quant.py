r"""LoftQ initialisation of peft LoRA layers over NF4 storage (:mod:`.nf4`), on CPU.

peft's LoftQ needs CUDA + bitsandbytes, so both definitions are implemented here in PyTorch:
NF4 (Dettmers et al., QLoRA, arXiv 2305.14314: blocks of 64, absmax, nearest of 16 normal-quantile
levels; 4.5 bits per weight with the float32 absmax) and LoftQ (Li et al., arXiv 2310.08659:
alternating NF4 and rank-``r`` SVD, :math:`\mathbf{W} \approx \mathbf{Q} + \mathbf{B}\mathbf{A}`).
:func:`quantize_lora_model` puts a peft LoRA model's frozen decoder into :class:`NF4Linear` layers
and sets the adapters; :func:`backbone_bytes` counts fp32 / fp16 / NF4 storage.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ..errors import LinksimError
from .nf4 import BLOCK, NF4_CODE, NF4Linear, nf4_dequantize, nf4_quantize, pack, unpack  # noqa: F401

__all__ = ["NF4_CODE", "BLOCK", "nf4_quantize", "nf4_dequantize", "pack", "unpack", "NF4Linear",
           "LoftQResult", "loftq", "quantize_lora_model", "backbone_bytes"]

class LoftQResult(NamedTuple):
    """Output of :func:`loftq` (see there)."""
    codes: torch.Tensor
    absmax: torch.Tensor
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    errors: list
    plain_error: float


def _rel(w: torch.Tensor, approx: torch.Tensor) -> float:
    w = w.double()
    return float(torch.linalg.matrix_norm(w - approx.double()) / torch.linalg.matrix_norm(w))


def loftq(w: torch.Tensor, rank: int, iters: int = 1) -> LoftQResult:
    r"""LoftQ: alternating NF4 quantisation and rank-``r`` SVD (Li et al. 2023, Algorithm 1).

    With :math:`\mathbf{B}_0\mathbf{A}_0 = \mathbf{0}`, for :math:`t = 1, \dots, T`

    .. math::

        \mathbf{Q}_t = \operatorname{NF4}\!\left(\mathbf{W} - \mathbf{B}_{t-1}\mathbf{A}_{t-1}\right),
        \quad \mathbf{W} - \mathbf{Q}_t = \mathbf{U}\boldsymbol{\Sigma}\mathbf{V}^{\mathsf T}, \quad
        \mathbf{B}_t = \mathbf{U}_{:, :r}\boldsymbol{\Sigma}_{:r}^{1/2}, \;
        \mathbf{A}_t = \boldsymbol{\Sigma}_{:r}^{1/2}\mathbf{V}_{:, :r}^{\mathsf T}

    returning :math:`(\mathbf{Q}_T, \mathbf{A}_T, \mathbf{B}_T)`: each iteration ends with the SVD,
    so the adapter is the best rank-r fit of the returned :math:`\mathbf{Q}`'s residual.
    :math:`\mathbf{Q}_1` is plain NF4, so ``errors[0] <= plain_error``; later iterations usually,
    not provably, lower the error (NF4's block scales move with its input).

    :input w: [out, in], `torch.float`. The weight (computed in float32).
    :param rank: LoRA rank ``r`` (``1 <= r <= min(out, in)``)
    :param iters: ``T >= 1``

    :output result: :class:`LoftQResult` with ``codes`` [out*in] uint8, ``absmax`` float32 (NF4 of
        :math:`\mathbf{Q}_T`), ``lora_A`` [r, in] and ``lora_B`` [out, r] float32 (peft's
        ``lora_A.weight`` / ``lora_B.weight``), ``errors`` (list of :math:`T` floats,
        :math:`\|\mathbf{W} - \mathbf{Q}_t - \mathbf{B}_t\mathbf{A}_t\|_F / \|\mathbf{W}\|_F`) and
        ``plain_error`` :math:`\|\mathbf{W} - \operatorname{NF4}(\mathbf{W})\|_F / \|\mathbf{W}\|_F`.

    .. rubric:: Examples

    .. code-block:: python

        res = loftq(torch.randn(64, 128), rank=8, iters=2)   # lora_B [64, 8], lora_A [8, 128]
        assert res.errors[-1] < res.plain_error
    """
    w = w.detach().to(torch.float32)
    if w.dim() != 2 or not 1 <= rank <= min(w.shape) or iters < 1:
        raise LinksimError(f"loftq: need a 2-D weight, 1 <= rank <= min(shape) and iters >= 1, "
                           f"got shape {tuple(w.shape)}, rank {rank}, iters {iters}")
    lowrank, errors, plain = torch.zeros_like(w), [], None
    for _ in range(iters):
        codes, absmax = nf4_quantize(w - lowrank)
        q = nf4_dequantize(codes, absmax, w.shape)
        plain = _rel(w, q) if plain is None else plain
        u, s, vh = torch.linalg.svd(w - q, full_matrices=False)
        root = s[:rank].sqrt()
        b, a = u[:, :rank] * root, root[:, None] * vh[:rank]
        lowrank = b @ a
        errors.append(_rel(w, q + lowrank))
    return LoftQResult(codes, absmax, a.contiguous(), b.contiguous(), errors, plain)


# ------------------------------------------------------------------------------ model level
def _linears(model: nn.Module):
    """``(name, parent, attr, module, in_decoder)`` for every peft LoRA layer of ``model`` and every
    Linear / NF4Linear of its decoder outside one (a LoRA layer is not descended into). Names are
    relative to the peft base model; the decoder is the first HF model's ``get_decoder()``."""
    from peft.tuners.lora import LoraLayer
    from transformers import PreTrainedModel

    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    hf = next((m for m in root.modules() if isinstance(m, PreTrainedModel)), None)
    decoder = root if hf is None else hf.get_decoder()

    def walk(mod, prefix, inside):
        for name, child in mod.named_children():
            full, ins = f"{prefix}{name}", inside or child is decoder
            if isinstance(child, LoraLayer) or (ins and isinstance(child, (nn.Linear, NF4Linear))):
                yield full, mod, name, child, ins
            elif not isinstance(child, (nn.Linear, NF4Linear)):
                yield from walk(child, full + ".", ins)

    yield from walk(root, "", root is decoder)


def quantize_lora_model(peft_model: nn.Module, mode: str = "loftq", iters: int = 1,
                        adapter: str | None = None) -> dict:
    r"""Put a peft LoRA model's frozen linear layers into NF4, with LoftQ or plain adapters.

    Every peft LoRA layer's ``base_layer`` (an ``nn.Linear``) becomes an :class:`NF4Linear`:

    * ``mode="loftq"``: of LoftQ's :math:`\mathbf{Q}_T` (:func:`loftq`, the adapter's rank,
      :math:`T` = ``iters``), and ``lora_A[adapter].weight`` / ``lora_B[adapter].weight`` are set
      to :math:`\mathbf{A}_T` / :math:`\mathbf{B}_T`. peft multiplies the adapter by
      ``lora_alpha / r``, so this needs ``lora_alpha == r`` (scaling 1, no rsLoRA).
    * ``mode="nf4"`` (the plain baseline): of :math:`\operatorname{NF4}(\mathbf{W})`; the adapters
      keep their values (peft's default init: A random, B = 0).

    The decoder's other frozen ``nn.Linear`` layers (``k_proj``, ``o_proj``, MLP, ...) become plain
    NF4 too; trainable layers, embeddings, norms and non-LoRA layers outside the decoder (e.g.
    ``lm_head``) stay. The model is changed in place.

    :param peft_model: a ``peft.PeftModel`` (or a module holding peft LoRA layers) around an HF model
    :param mode: ``"loftq"`` or ``"nf4"``
    :param iters: LoftQ iterations :math:`T` (``mode="loftq"`` only)
    :param adapter: the adapter to set (default: the active one)

    :output report: dict, layer name -> ``{"shape": (out, in), "rank": r (0: no LoRA),
        "error": ‖W − (Q + s·BA)‖_F / ‖W‖_F for the mode used (s = peft's scaling),
        "plain_error": ‖W − NF4(W)‖_F / ‖W‖_F}``.

    .. rubric:: Examples

    .. code-block:: python

        from peft import LoraConfig, get_peft_model
        from linksim.llm import BackboneSpec, load_backbone
        model = get_peft_model(load_backbone(BackboneSpec(layers=2)).model,
                               LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
        report = quantize_lora_model(model, "loftq", iters=5)
        report["layers.0.self_attn.q_proj"]     # {'error': 0.081, 'plain_error': 0.101, ...}
    """
    from peft.tuners.lora import LoraLayer

    if mode not in ("nf4", "loftq"):
        raise LinksimError(f"quantize_lora_model: mode must be 'nf4' or 'loftq', got {mode!r}")
    active = adapter or getattr(peft_model, "active_adapter", "default")
    adapter = active if isinstance(active, str) else active[0]
    report = {}
    for name, parent, attr, mod, _ in list(_linears(peft_model)):
        if not isinstance(mod, LoraLayer):
            if isinstance(mod, nn.Linear) and not mod.weight.requires_grad:
                q = NF4Linear.from_linear(mod)
                setattr(parent, attr, q)
                err = _rel(mod.weight, q.dequantize())
                report[name] = {"shape": tuple(mod.weight.shape), "rank": 0, "error": err,
                                "plain_error": err}
            continue
        base = mod.base_layer
        if adapter not in mod.lora_A or not isinstance(base, nn.Linear) \
                or getattr(mod, "fan_in_fan_out", False) or mod.use_dora.get(adapter, False):
            raise LinksimError(f"quantize_lora_model: layer {name} must be a plain LoRA (adapter "
                               f"{adapter!r}, no DoRA) over nn.Linear, got {type(base).__name__}")
        w, r, scaling = base.weight.detach(), mod.r[adapter], float(mod.scaling[adapter])
        lora_a, lora_b = mod.lora_A[adapter].weight, mod.lora_B[adapter].weight
        if mode == "loftq":
            if abs(scaling - 1.0) > 1e-12:
                raise LinksimError(f"quantize_lora_model: loftq needs lora_alpha == r (scaling 1, "
                                   f"no rsLoRA), layer {name} has r={r}, scaling={scaling:g}")
            res = loftq(w, r, iters)
            q, plain = NF4Linear.from_linear(base, res.codes, res.absmax), res.plain_error
            with torch.no_grad():
                lora_a.copy_(res.lora_A)
                lora_b.copy_(res.lora_B)
        else:
            q = NF4Linear.from_linear(base)
            plain = _rel(w, q.dequantize())
        mod.base_layer = q
        delta = scaling * (lora_b.detach().float() @ lora_a.detach().float())
        report[name] = {"shape": tuple(w.shape), "rank": r,
                        "error": _rel(w, q.dequantize() + delta), "plain_error": plain}
    return report


def backbone_bytes(model: nn.Module) -> dict:
    r"""Storage of a backbone with its decoder's linear weights in fp32, fp16 or NF4.

    The linear weights are the ``weight`` of every ``nn.Linear`` / :class:`NF4Linear` in the
    decoder (for a LoRA layer: its base layer), :math:`N` values in all. A matrix of :math:`n` values
    takes :math:`4n` (fp32), :math:`2n` (fp16) or :math:`\lceil n/2 \rceil + 4\lceil n/64 \rceil`
    bytes (NF4: packed codes + float32 absmax). Everything else stays unquantised and is counted
    at its own dtype in all three formats: the token embedding (and an LM head, if any), the RMS
    norms, biases, other persistent buffers (shared tensors once). LoRA adapter weights are not
    backbone: reported apart.

    :param model: an HF model, a PeftModel around one, or a module holding one

    :output bytes: dict: ``"fp32"``, ``"fp16"``, ``"nf4"`` (totals), ``"linear_fp32"``,
        ``"linear_fp16"``, ``"linear_nf4"`` (linear weights only), ``"linear_params"`` (:math:`N`),
        ``"other"`` (the unquantised bytes), ``"lora"`` (adapter bytes, not in the totals).

    .. rubric:: Examples

    .. code-block:: python

        from linksim.llm import BackboneSpec, load_backbone
        b = backbone_bytes(load_backbone(BackboneSpec(layers=6)).model)
        b["linear_nf4"] / b["linear_fp16"]      # 0.28125 = 4.5 / 16
    """
    from peft.tuners.lora import LoraLayer

    linear_ids, lora_ids, n_total, nf4 = set(), set(), 0, 0
    for _, _, _, mod, in_decoder in _linears(model):
        if isinstance(mod, LoraLayer):
            lora_ids.update(id(p) for n, p in mod.named_parameters() if not n.startswith("base_layer."))
            mod = mod.get_base_layer()
        if not in_decoder:
            continue
        if isinstance(mod, NF4Linear):
            linear_ids.update((id(mod.qweight), id(mod.absmax)))
            n = mod.in_features * mod.out_features
        else:
            linear_ids.add(id(mod.weight))
            n = mod.weight.numel()
        n_total, nf4 = n_total + n, nf4 + math.ceil(n / 2) + 4 * math.ceil(n / BLOCK)
    tensors = [p for _, p in model.named_parameters()]
    for mod in model.modules():
        tensors += [b for name, b in mod.named_buffers(recurse=False)
                    if name not in mod._non_persistent_buffers_set]
    sizes = {id(t): t.numel() * t.element_size() for t in tensors if id(t) not in linear_ids}
    lora = sum(v for k, v in sizes.items() if k in lora_ids)
    other = sum(sizes.values()) - lora
    out = {"linear_fp32": 4 * n_total, "linear_fp16": 2 * n_total, "linear_nf4": nf4}
    out.update({k[7:]: v + other for k, v in list(out.items())})
    out.update({"linear_params": n_total, "other": other, "lora": lora})
    return out
