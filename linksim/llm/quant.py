r"""4-bit NormalFloat (NF4) storage and LoftQ initialisation of peft LoRA layers, on CPU.

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
import torch.nn.functional as F
from torch import nn

from ..errors import LinksimError

__all__ = ["NF4_CODE", "BLOCK", "nf4_quantize", "nf4_dequantize", "pack", "unpack", "NF4Linear",
           "LoftQResult", "loftq", "quantize_lora_model", "backbone_bytes"]

BLOCK = 64  # values per absmax block (QLoRA's block size for weights)

NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=torch.float32)
r"""The 16 NF4 levels (QLoRA, appendix E), ascending; code ``i`` means ``NF4_CODE[i]``, code 7 is 0.
Normal quantiles: :math:`\Phi^{-1}(p)` at 9 (positive) resp. :math:`-\Phi^{-1}(p)` at 8 (negative)
points :math:`p` evenly spaced in :math:`[\delta, \tfrac12]`, the :math:`\tfrac12` end dropped, plus 0,
divided by the largest (:math:`\delta = 0.9677083`)."""


def _nearest(x: torch.Tensor) -> torch.Tensor:
    """Index of the nearest NF4 level for normalised ``x`` (float32); ties go to the lower index."""
    code = NF4_CODE.to(x.device)
    mids = (code[1:] + code[:-1]) * 0.5
    i = torch.bucketize(x, mids)                      # mids[i-1] < x <= mids[i]
    # float32 mid-points can disagree with |x - c| by an ulp: decide among neighbours by distance
    cand = torch.stack([(i - 1).clamp_min(0), i, (i + 1).clamp_max(15)], -1)
    d = (x.unsqueeze(-1) - code[cand]).abs()
    return cand.gather(-1, d.argmin(-1, keepdim=True)).squeeze(-1)


def nf4_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""NF4 quantisation with per-block absmax scaling (QLoRA).

    The weight is flattened row-major and cut into blocks :math:`b` of :data:`BLOCK` = 64 values
    (the last block zero-padded). For value :math:`w_j` of block :math:`b`

    .. math::

        s_b = \max_{k \in b} |w_k|, \qquad
        c_j = \operatorname*{arg\,min}_{i \in \{0..15\}} \left| \frac{w_j}{s_b} - q_i \right|

    with :math:`q_i` = :data:`NF4_CODE` (division and distances in float32; a tie goes to the lower
    index; an all-zero block has :math:`s_b = 0` and all codes 7, i.e. 0).

    :input w: [...], `torch.float`. Any shape and floating dtype (computed in float32).

    :output codes: [n], `torch.uint8`. One code in 0..15 per value, ``n = w.numel()``.
    :output absmax: [ceil(n / 64)], `torch.float32`. :math:`s_b` per block.

    .. rubric:: Examples

    .. code-block:: python

        codes, absmax = nf4_quantize(torch.randn(128, 64))   # [8192] uint8, [128] float32
    """
    flat = w.detach().reshape(-1).to(torch.float32)
    n, nb = flat.numel(), max(1, math.ceil(flat.numel() / BLOCK))
    blocks = F.pad(flat, (0, nb * BLOCK - n)).view(nb, BLOCK)
    absmax = blocks.abs().amax(1)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    codes = _nearest(blocks / scale[:, None]).reshape(-1)[:n]
    return codes.to(torch.uint8), absmax


def nf4_dequantize(codes: torch.Tensor, absmax: torch.Tensor, shape,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Inverse of :func:`nf4_quantize`: :math:`\hat w_j = q_{c_j}\, s_b`.

    :input codes: [n], `torch.uint8`. Codes 0..15 (unpacked).
    :input absmax: [ceil(n / 64)], `torch.float32`. Block scales.
    :param shape: shape of the weight (``prod(shape) == n``)
    :param dtype: output dtype (the product is formed in float32, then cast)

    :output w_hat: [shape], `dtype`. The dequantised weight.

    .. rubric:: Examples

    .. code-block:: python

        w = torch.randn(4, 64)
        w_hat = nf4_dequantize(*nf4_quantize(w), w.shape)    # |w - w_hat| <= 0.152 * row absmax
    """
    n, nb = codes.numel(), absmax.numel()
    vals = NF4_CODE.to(absmax.device)[codes.long()]
    vals = F.pad(vals, (0, nb * BLOCK - n)).view(nb, BLOCK) * absmax.to(torch.float32)[:, None]
    return vals.reshape(-1)[:n].reshape(shape).to(dtype)


def pack(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte: byte ``k`` = ``codes[2k] << 4 | codes[2k+1]`` (odd n: last low nibble 0).

    :input codes: [n], `torch.uint8`. Values 0..15.

    :output packed: [ceil(n / 2)], `torch.uint8`.

    .. rubric:: Examples

    .. code-block:: python

        pack(torch.tensor([1, 2, 15], dtype=torch.uint8)).tolist()       # [18, 240]
    """
    c = codes.reshape(-1).to(torch.uint8)
    if c.numel() % 2:
        c = torch.cat([c, c.new_zeros(1)])
    return (c[0::2] << 4) | c[1::2]


def unpack(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``packed`` [ceil(n / 2)] uint8 -> ``codes`` [n] uint8."""
    return torch.stack([packed >> 4, packed & 15], -1).reshape(-1)[:n]


class _NF4MatMul(torch.autograd.Function):
    """``x @ W^T + b`` with the NF4 weight decoded again in backward instead of kept: autograd would
    otherwise hold one fp32 copy of every quantised weight until backward, more memory than the
    fp32 model it replaces. The weight is frozen: only ``x`` gets a gradient."""

    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        b = None if layer.bias is None else layer.bias.to(x.dtype)
        return F.linear(x, layer.dequantize(x.dtype), b)

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.layer.dequantize(grad.dtype), None


class NF4Linear(nn.Module):
    r"""Frozen linear layer :math:`\mathbf{y} = \mathbf{x}\hat{\mathbf{W}}^{\mathsf T} + \mathbf{b}`
    with :math:`\hat{\mathbf{W}}` stored as packed NF4 codes + float32 block absmax.

    Dequantised (:func:`nf4_dequantize`) at every call, in the input's dtype; nothing trainable.
    Buffers: ``qweight`` uint8 [ceil(out*in/2)], ``absmax`` float32 [ceil(out*in/64)], ``bias``
    float32 [out] or None (``model.half()`` casts the float ones too). No ``weight`` attribute on
    purpose (peft's in-place ``merge`` would silently do nothing): use :meth:`dequantize`.

    :param in_features: input size
    :param out_features: output size
    :param bias: whether the layer has a bias

    :input x: [..., in_features], `torch.float`.

    :output y: [..., out_features], same dtype as ``x``.

    .. rubric:: Examples

    .. code-block:: python

        q = NF4Linear.from_linear(torch.nn.Linear(64, 32))
        y = q(torch.randn(5, 64))            # [5, 32]; q.nbytes == 1024 + 128 + 128 (codes, absmax, bias)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        n = self.in_features * self.out_features
        self.register_buffer("qweight", torch.zeros(math.ceil(n / 2), dtype=torch.uint8))
        self.register_buffer("absmax", torch.zeros(math.ceil(n / BLOCK), dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(self.out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, codes: torch.Tensor | None = None,
                    absmax: torch.Tensor | None = None) -> "NF4Linear":
        """NF4 copy of ``linear`` (its weight quantised here, or the given ``codes``/``absmax``,
        e.g. LoftQ's :math:`\\mathbf{Q}`), on the same device."""
        if not isinstance(linear, nn.Linear):
            raise LinksimError(f"NF4Linear.from_linear: expected nn.Linear, got {type(linear).__name__}")
        if codes is None:
            codes, absmax = nf4_quantize(linear.weight)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None).to(linear.weight.device)
        q.qweight.copy_(pack(codes))
        q.absmax.copy_(absmax)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach().float())
        return q

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight :math:`\\hat{\\mathbf{W}}` ``[out, in]`` in ``dtype``."""
        n = self.in_features * self.out_features
        return nf4_dequantize(unpack(self.qweight, n), self.absmax,
                              (self.out_features, self.in_features), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _NF4MatMul.apply(x, self)

    @property
    def nbytes(self) -> int:
        """Real storage: packed codes + absmax (+ bias), in bytes."""
        return sum(t.numel() * t.element_size() for t in (self.qweight, self.absmax, self.bias)
                   if t is not None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, nf4 block={BLOCK}"


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
