"""Task instructions: distinct identifiers, the scenario's numbers in the description, the ablation mode."""
import pytest

import linksim
from linksim.llm.prompt import instruction, template
from linksim.registry import trainable_tasks

from conftest import tiny


def test_each_task_has_its_own_identifier_and_the_scenarios_numbers():
    sc = tiny(detection={"num_users": 3}, channel={"bs_rows": 2, "bs_cols": 2})
    texts = {t: instruction(t, sc) for t in trainable_tasks()}
    assert len({t.split("]")[0] for t in texts.values()}) == len(texts)
    for t, text in texts.items():
        assert text.startswith(template(t)[0]) and "<Instruction>" in text
        assert "4 antennas" in text or "4 receive antennas" in text
    assert "3 single-antenna users send 16-QAM" in texts["detection"]
    assert "next 4 channel samples from the past 16" in texts["prediction"]
    assert "serves 7 single-antenna users" in instruction("precoding", sc, num_users=7)


def test_prompt_none_is_empty_and_bad_values_are_one_line_errors():
    sc = tiny()
    assert instruction("precoding", sc, mode="none") == ""
    with pytest.raises(linksim.LinksimError, match="prompt = 'fancy'"):
        instruction("precoding", sc, mode="fancy")
    with pytest.raises(linksim.LinksimError, match="task 'loop'"):
        instruction("loop", sc)
