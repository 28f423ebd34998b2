"""Templates that rewrite history (Qwen3 drops <think> from turns before the last user message, R1-style templates
from every turn): every turn's reasoning is trained, in an example rendered as the model sees it at inference,
and what was split is counted (DESIGN §5)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.worker.families import FAMILIES, build_family_tokenizer
from tests.worker.render_helpers import kind_text, msg, traj
from worker.training.data import prepare_examples
from worker.training.render import ACTION, REASON, render_examples

FAMILY = {f.name: f for f in FAMILIES}
CORPUS = ["<think>\nThe user wants the weather.\n</think>\n", "It is sunny.", "What about tomorrow?"] * 10


def _chat(turns: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    parts = [msg("system", (None, "You are a weather bot."))]
    for i in range(turns):
        parts.append(msg("user", (None, f"Weather on day {i}?")))
        parts.append(msg("assistant", ("reason", f"<think>\nDay {i} needs a lookup.\n</think>\n"),
                         ("action", f"Day {i} is sunny.")))
    return traj(*parts)


@pytest.fixture(scope="module")
def qwen3() -> Any:
    return build_family_tokenizer(FAMILY["qwen3"], [*CORPUS, FAMILY["qwen3"].template_text()])


@pytest.fixture(scope="module")
def r1() -> Any:
    return build_family_tokenizer(FAMILY["deepseek-r1"], [*CORPUS, FAMILY["deepseek-r1"].template_text()])


def test_qwen3_earlier_turns_are_trained_in_their_own_examples(qwen3: Any) -> None:
    messages, spans = _chat(3)
    result = render_examples(messages, spans, qwen3, max_seq_len=4096, example_id="c")
    whole, *alone = result.examples
    assert whole.turn is None and [e.turn for e in alone] == [2, 4] and result.stats.split_turns == 2
    assert [e.id for e in alone] == ["c#2", "c#4"]
    # the whole conversation trains the last turn (Qwen3 keeps its thinking), earlier turns are context there
    assert kind_text(qwen3, whole, REASON) == "<think>\nDay 2 needs a lookup.\n</think>\n\n"
    assert kind_text(qwen3, whole, ACTION) == "Day 2 is sunny.<|im_end|>"
    for i, ex in enumerate(alone):
        # the prompt is the template's own prompt for that turn: its history without earlier thinking
        prompt = qwen3.apply_chat_template([{"role": m["role"], "content": m["text"]} for m in messages[:2 + 2 * i]],
                                           tokenize=False, add_generation_prompt=True)
        assert qwen3.decode(ex.input_ids).startswith(prompt) and "needs a lookup" not in prompt
        assert kind_text(qwen3, ex, REASON) == f"<think>\nDay {i} needs a lookup.\n</think>\n"
        assert kind_text(qwen3, ex, ACTION) == f"Day {i} is sunny.<|im_end|>"


def test_r1_templates_drop_every_turn_s_thinking_so_every_turn_is_split(r1: Any) -> None:
    messages, spans = _chat(2)
    result = render_examples(messages, spans, r1, max_seq_len=4096)
    assert [e.turn for e in result.examples] == [2, 4] and result.stats.split_turns == 2
    for i, ex in enumerate(result.examples):
        # R1's generation prompt already opens the reasoning ("<｜Assistant｜><think>\n"): that part is prompt
        assert r1.decode(ex.input_ids).count("<think>") == 1
        assert kind_text(r1, ex, REASON) == f"Day {i} needs a lookup.\n</think>\n"
        assert kind_text(r1, ex, ACTION) == f"Day {i} is sunny.<｜end▁of▁sentence｜>"


def test_split_turns_are_reported_in_the_data_report(qwen3: Any) -> None:
    messages, spans = _chat(3)
    records = [{"id": "c", "messages": messages, "spans": spans, "split": "train"}]
    data = prepare_examples(records, qwen3, max_seq_len=4096)  # type: ignore[arg-type]
    assert len(data.train) == 3 and data.train.ids == ["c", "c#2", "c#4"]
    assert data.report()["train"]["split_turns"] == 2 and data.report()["train"]["unrendered_turns"] == 0
