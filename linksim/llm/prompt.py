"""Task instructions for the multi-task LLM: identifier, task and data description, instruction.

Zheng & Dai (arXiv 2412.20772, Sec. III-A) tell the tasks apart by a text prompt placed before the
data tokens, in three parts: a task identifier, a description of the task and of the data (with the
system's numbers), and an instruction stating the objective. The wording here is linksim's own;
the numbers come from the scenario the agent runs in, so a prompt always describes the data the
encoders actually receive.

Each task declares its template (its chain's ``prompt``: identifier, description with the format
fields of :func:`dims_fields`, instruction). The prompt of a task is the same for every sample, and
under causal attention its hidden states do not depend on the data tokens that follow: the LLM
agent computes its key/values once (:meth:`linksim.agents.models.llm.model.LLMAgent.run_llm`).
"""
from __future__ import annotations

from ..blocks.qam import qam_name
from ..errors import LinksimError
from ..registry import TASKS

PROMPT_MODES = ("text", "none")


def template(task: str) -> tuple[str, str, str]:
    """The task's (identifier, description, instruction), declared by the task (its ``prompt``)."""
    t = TASKS.get(task)
    if t is None or not t.cls.prompt:
        known = [n for n, s in TASKS.items() if s.cls.prompt]
        raise LinksimError(f"task {task!r}: choose from {', '.join(known)}")
    return t.cls.prompt


def dims_fields(dims, num_users: int | None = None) -> dict:
    """The numbers a task's description names, from an agent's :class:`~linksim.chains.Dims`
    (``num_users`` overrides its K, e.g. for one precoding model serving several K)."""
    return {"antennas": dims.num_bs_antennas, "subcarriers": dims.num_subcarriers,
            "spacing_ms": dims.sample_spacing_us / 1e3, "history": dims.history, "horizon": dims.horizon,
            "users": dims.num_users if num_users is None else int(num_users),
            "modulation": qam_name(dims.bits_per_symbol), "slots": dims.symbols_per_sample}


def instruction_for(task: str, dims, mode: str = "text", num_users: int | None = None) -> str:
    """:func:`instruction` from an agent's sizes (what the LLM agent uses)."""
    ident, desc, instr = template(task)
    if mode not in PROMPT_MODES:
        raise LinksimError(f"prompt = {mode!r}: choose from {', '.join(PROMPT_MODES)}")
    if mode == "none":
        return ""
    fields = dims_fields(dims, num_users)
    return f"{ident} {desc.format(**fields)} <Instruction> {instr.format(**fields)}"


def instruction(task: str, scenario: Scenario, mode: str = "text", num_users: int | None = None) -> str:
    """The prompt text of ``task`` for ``scenario``.

    :param task: ``prediction`` | ``precoding`` | ``detection``
    :param scenario: the scenario whose numbers fill the description
    :param mode: ``"text"`` (identifier + description + ``<Instruction>`` + instruction) or
        ``"none"`` (the ablation without a prompt: empty text)
    :param num_users: override of the task's user count
    :output text: str

    .. rubric:: Examples

    .. code-block:: python

        import linksim
        from linksim.llm.prompt import instruction
        sc = linksim.load_scenario("scenarios/quick.toml")
        instruction("detection", sc)
        # '[signal detection] 4 single-antenna users send 16-QAM symbols ... <Instruction> Recover ...'
    """
    template(task)            # checked before the task's sizes are read
    return instruction_for(task, TASKS[task].cls.dims(scenario), mode, num_users)
