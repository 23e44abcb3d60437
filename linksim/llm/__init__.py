"""The LLM parts of linksim, on which the multi-task agent (:mod:`linksim.agents.models.llm`) is built:

- :mod:`~linksim.llm.backbone`: a frozen causal LM truncated to its first N layers (default the
  embedded SmolLM2-135M-Instruct), offline only; :mod:`~linksim.llm.files`: its cache.
- :mod:`~linksim.llm.quant`: NF4 (4-bit NormalFloat) storage and LoftQ initialisation on CPU,
  written into peft's LoRA layers.
- :mod:`~linksim.llm.prompt`: the task instructions placed before the data tokens.
"""
from .backbone import (Backbone, BackboneSpec, cache_root, expand_cache, file_sha256, load_backbone,
                       smollm2_gguf, tiny_backbone)
from .prompt import instruction
from .quant import NF4Linear, backbone_bytes, loftq, nf4_dequantize, nf4_quantize, quantize_lora_model
