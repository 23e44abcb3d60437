r"""The LLM agent's heads for the sensing tasks (``los``, ``beam``, ``pathloss``, ``position``):
one data token per user, made from the modalities the head reads; the LLM lets the users of a
drop attend to each other (and to the task's prefix); a small decoder per task reads each user's
hidden state.

Data flow of one sensing task::

    modalities --features, standardise, MLP each, fusion--> tokens [b, K, d] (d: the LLM width)
    [prefix; tokens] --frozen LLM + LoRA--> hidden [b, K, d] --the task's decoder--> block output

The encoders and fusions (``concat``, MMSense's ``gate``, cross-modal ``attention``) are those of
:mod:`.._modalities`, the decoders and losses those of :mod:`.._sensing`; the agent's
``[model] inputs``, ``fusion`` and ``encoders`` set every sensing head's (a head's own table overrides them,
e.g. ``[model.heads.position] inputs = ["csi", "gnss"]``).
"""
from __future__ import annotations

from torch import nn

from .._modalities import ModalityEncoder, check_inputs
from .._sensing import SENSING_TASKS, SensingDecoder, sensing_loss
from .heads import register_head

__all__ = ["SensingHead"]


class SensingHead(nn.Module):
    r"""Modalities -> one token per user -> LLM -> the task's output (module docstring).

    :param dims: the agent's sizes (M, F; ``num_beams`` for ``beam``)
    :param width: the LLM's hidden size
    :param inputs: modalities read (default ``["csi"]``)
    :param fusion: ``"concat"`` | ``"gate"`` | ``"attention"``
    :param hidden: hidden width of the encoders and the decoder (default 256)
    :param encoders: ``"trained"`` (default) or ``"contrastive"`` (AI2MMUM's frozen radio
        encoders: pre-trained in the first stage, then frozen behind linear adapters)

    :input obs: dict, modality name -> tensor (a sensing block's input).
    :output: the task's block output (:mod:`.._sensing`).
    """

    must_match = ("num_bs_antennas", "num_subcarriers")
    reads_modalities = True

    def __init__(self, dims, width: int, inputs=("csi",), fusion: str = "concat", hidden: int = 256,
                 encoders: str = "trained"):
        super().__init__()
        self.inputs = check_inputs(inputs, fusion, f"llm head {self.task}", encoders)
        self.encoder = ModalityEncoder(self.inputs, dims.num_bs_antennas, dims.num_subcarriers, width, hidden,
                                       fusion, encoders)
        self.decoder = SensingDecoder(self.task, dims, width, hidden)

    def hidden(self, agent, obs: dict):
        return agent.run_llm(self.task, self.encoder(obs))

    def run(self, agent, obs: dict):
        return self.decoder.output(self.hidden(agent, obs))

    def loss(self, agent, batch: dict):
        return sensing_loss(self.encoder, self.decoder, lambda z: agent.run_llm(self.task, z), batch)


# one head class per task, each registered under its task's name
for _task in SENSING_TASKS:
    _cls = type(f"{_task.title()}Head", (SensingHead,), {"__doc__": SensingHead.__doc__})
    if _task == "beam":
        _cls.must_match = ("num_bs_antennas", "num_subcarriers", "num_beams")
    register_head(_task)(_cls)
