"""Task instructions for the multi-task LLM: identifier, task and data description, instruction.

Zheng & Dai (arXiv 2412.20772, Sec. III-A) tell the tasks apart by a text prompt placed before the
data tokens, in three parts: a task identifier, a description of the task and of the data (with the
system's numbers), and an instruction stating the objective. The wording here is linksim's own;
the numbers come from the scenario the agent runs in, so a prompt always describes the data the
encoders actually receive.

The prompt of a task is the same for every sample, and under causal attention its hidden states do
not depend on the data tokens that follow: :mod:`linksim.llm.prefix` computes its key/values once.
"""
from __future__ import annotations

from ..blocks.qam import qam_name
from ..errors import LinksimError
from ..scenario import Scenario

PROMPT_MODES = ("text", "none")

#: identifier, description (format fields from :func:`prompt_fields`), instruction
TEMPLATES = {
    "prediction": (
        "[channel prediction]",
        "A base station with {antennas} antennas tracks the channels of moving single-antenna users "
        "on {subcarriers} OFDM subcarriers, with one channel sample every {spacing_ms:g} ms. "
        "The history is measured with noise.",
        "Predict the next {horizon} channel samples from the past {history} noisy samples.",
    ),
    "precoding": (
        "[multi-user precoding]",
        "A base station with {antennas} antennas serves {users} single-antenna users at the same time "
        "with linear precoding under a total transmit power budget.",
        "Design the precoder from the users' channels so that the sum rate of all users is maximal.",
    ),
    "detection": (
        "[signal detection]",
        "{users} single-antenna users send {modulation} symbols over a shared channel to a base station "
        "with {antennas} receive antennas; each sample holds {slots} symbol slots.",
        "Recover every user's transmitted symbols from the received signals and the channel.",
    ),
}


def prompt_fields(scenario: Scenario, task: str, num_users: int | None = None) -> dict:
    """The numbers a task's description names, read from ``scenario`` (``num_users`` overrides
    the task's user count, e.g. for one precoding model serving several K)."""
    from ..agents.base import Dims

    return dims_fields(Dims.from_scenario(scenario, task), num_users)


def dims_fields(dims, num_users: int | None = None) -> dict:
    """:func:`prompt_fields` from an agent's :class:`~linksim.agents.base.Dims`."""
    return {"antennas": dims.num_bs_antennas, "subcarriers": dims.num_subcarriers,
            "spacing_ms": dims.sample_spacing_us / 1e3, "history": dims.history, "horizon": dims.horizon,
            "users": dims.num_users if num_users is None else int(num_users),
            "modulation": qam_name(dims.bits_per_symbol), "slots": dims.symbols_per_sample}


def instruction_for(task: str, dims, mode: str = "text", num_users: int | None = None) -> str:
    """:func:`instruction` from an agent's sizes (what the LLM agent uses)."""
    if task not in TEMPLATES:
        raise LinksimError(f"task {task!r}: choose from {', '.join(TEMPLATES)}")
    if mode not in PROMPT_MODES:
        raise LinksimError(f"prompt = {mode!r}: choose from {', '.join(PROMPT_MODES)}")
    if mode == "none":
        return ""
    ident, desc, instr = TEMPLATES[task]
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
    if task not in TEMPLATES:   # checked before Dims.from_scenario looks up the task's section
        raise LinksimError(f"task {task!r}: choose from {', '.join(TEMPLATES)}")
    from ..agents.base import Dims

    return instruction_for(task, Dims.from_scenario(scenario, task), mode, num_users)
