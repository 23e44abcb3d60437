"""The multi-task LLM agent (architecture ``llm``): :mod:`.model` (backbone + LoRA + prompt prefix),
:mod:`.heads` (task encoders and decoders), :mod:`.sensing_heads` (the sensing tasks' heads),
:mod:`.mechanisms` (the optional learned prefix and tapped layers). Importing registers it; transformers and peft are
imported only when an agent is built."""
from . import sensing_heads  # noqa: F401  (registers the sensing tasks' heads)
from .model import LLMAgent  # noqa: F401
