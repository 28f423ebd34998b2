"""End of turn: the special token(s) a template puts right after an assistant message are trained as ACTION,
for user-first and system-first conversations alike, whatever the tokenizer's eos (DESIGN §5)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.worker.families import FAMILIES, build_family_tokenizer
from tests.worker.render_helpers import kind_text, msg, traj
from worker.training.masks_view import format_masks
from worker.training.render import ACTION, NONE, render_trajectory
from worker.training.template import template_info
from worker.training.tiny import build_tokenizer

QWEN25 = next(f for f in FAMILIES if f.name == "qwen2.5")
REACT_CORPUS = ["Thought: I need to find the answer.\nAction: Finish[5]", "What is 2 + 3?", "Observation: 5"] * 20


@pytest.fixture(scope="module")
def qwen_base_tok() -> Any:
    """Qwen2.5's real template; eos is `<|endoftext|>` as in the Qwen2.5 base checkpoints."""
    return build_family_tokenizer(QWEN25, [*REACT_CORPUS, QWEN25.template_text()])


def _eot_kinds(tok: Any, ex: Any, eot: str) -> list[int]:
    eot_id = tok.convert_tokens_to_ids(eot)
    return [k for t, k in zip(ex.input_ids, ex.kinds, strict=True) if t == eot_id]


def test_user_first_react_trajectories_learn_to_stop_under_qwen25(qwen_base_tok: Any) -> None:
    # The audit's case: Qwen2.5 injects a default system turn ending in <|im_end|> before a user-first
    # conversation, and the base tokenizer's eos is <|endoftext|>: no assistant <|im_end|> was ever trained.
    assert qwen_base_tok.eos_token == "<|endoftext|>"
    rng = random.Random(0)
    for _ in range(40):
        turns = [msg("user", (None, f"What is {rng.randint(1, 9)} + {rng.randint(1, 9)}?"))]
        for _step in range(rng.randint(1, 3)):
            turns.append(msg("assistant", ("reason", "Thought: I need to find the answer.\n"),
                             ("action", f"Action: Finish[{rng.randint(1, 20)}]")))
            turns.append(msg("user", (None, "Observation: ok")))
        messages, spans = traj(*turns[:-1])
        ex = render_trajectory(messages, spans, qwen_base_tok, max_seq_len=4096)
        assert ex is not None
        n_assistant = sum(m["role"] == "assistant" for m in messages)
        # the injected system turn and the user turns end in <|im_end|> too: those stay context
        assert _eot_kinds(qwen_base_tok, ex, "<|im_end|>") == [NONE] + [NONE, ACTION] * n_assistant
    messages, spans = traj(msg("user", (None, "What is 2 + 3?")),
                           msg("assistant", ("reason", "Thought: I need to find the answer.\n"),
                               ("action", "Action: Finish[5]")))
    shown = format_masks(render_trajectory(messages, spans, qwen_base_tok, max_seq_len=512), qwen_base_tok,
                         color=False)
    assert "⟦A:Action: Finish[5]<|im_end|>⟧" in shown


def test_our_chatml_template_with_tools_user_first(chatml_tok: Any) -> None:
    # CHATML_TEMPLATE puts the tool list in a system block that ends in <|im_end|>; eos is </s>.
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    for first in ("user", "system"):
        turns = ([msg("system", (None, "Be brief."))] if first == "system" else []) + [
            msg("user", (None, "Weather?")), msg("assistant", ("action", "Sunny."))]
        messages, spans = traj(*turns)
        ex = render_trajectory(messages, spans, chatml_tok, max_seq_len=512, tools=tools)
        assert ex is not None and kind_text(chatml_tok, ex, ACTION) == "Sunny.<|im_end|>"


def _tokenizer(template: str, specials: list[str], eos: str) -> Any:
    corpus = ["hello there", "Sunny today.", "Weather?"] * 10
    return build_tokenizer(corpus, special_tokens=specials, bos_token=None, eos_token=eos, pad_token=None,
                           chat_template=template)


def test_an_end_of_turn_of_two_specials_is_trained_whole() -> None:
    # Cohere 2 closes an answer with <|END_RESPONSE|><|END_OF_TURN_TOKEN|> (its eos is the second one).
    template = ("{% for m in messages %}<|START_OF_TURN_TOKEN|>{% if m['role'] == 'assistant' %}<|CHATBOT_TOKEN|>"
                "<|START_RESPONSE|>{{ m['content'] }}<|END_RESPONSE|>{% else %}<|USER_TOKEN|>{{ m['content'] }}"
                "{% endif %}<|END_OF_TURN_TOKEN|>{% endfor %}")
    specials = ["<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|USER_TOKEN|>",
                "<|START_RESPONSE|>", "<|END_RESPONSE|>"]
    tok = _tokenizer(template, specials, "<|END_OF_TURN_TOKEN|>")
    messages, spans = traj(msg("user", (None, "Weather?")), msg("assistant", ("action", "Sunny.")),
                           msg("user", (None, "hello")))
    ex = render_trajectory(messages, spans, tok, max_seq_len=512)
    assert ex is not None and kind_text(tok, ex, ACTION) == "Sunny.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"


def test_a_last_turn_keeps_only_the_mid_conversation_end_of_turn() -> None:
    # Phi-4-mini appends eos after the last turn's <|end|> when no generation prompt is asked for.
    phi = next(f for f in FAMILIES if f.name == "phi4-mini")
    tok = build_family_tokenizer(phi, ["Weather?", "Sunny."] * 10)
    assert template_info(tok).eot_text == "<|end|>"
    messages, spans = traj(msg("user", (None, "Weather?")), msg("assistant", ("action", "Sunny.")))
    ex = render_trajectory(messages, spans, tok, max_seq_len=512)
    assert ex is not None and kind_text(tok, ex, ACTION) == "Sunny.<|end|>"
    assert tok.decode(ex.input_ids).endswith("<|end|><|endoftext|>") and ex.kinds[-1] == NONE


def test_a_special_that_closes_a_turn_and_precedes_the_next_content() -> None:
    # OpenChat: "GPT4 Correct User: …<|end_of_turn|>GPT4 Correct Assistant: …<|end_of_turn|>"
    template = ("{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' "
                "+ message['content'] + '<|end_of_turn|>'}}{% endfor %}")
    tok = build_tokenizer(["GPT4 Correct User: hello"] * 10, special_tokens=["<s>", "</s>", "<|end_of_turn|>"],
                          bos_token="<s>", eos_token="</s>", pad_token=None, chat_template=template)
    messages, spans = traj(msg("user", (None, "hello")), msg("assistant", ("action", "Hi there.")),
                           msg("user", (None, "bye")))
    ex = render_trajectory(messages, spans, tok, max_seq_len=512)
    assert ex is not None and kind_text(tok, ex, ACTION) == "Hi there.<|end_of_turn|>"


def test_the_agent_runner_stops_at_the_template_end_of_turn() -> None:
    from worker.synthetic.runner import end_of_turn_ids, render_prompt

    gemma = next(f for f in FAMILIES if f.name == "gemma2")
    tok = build_family_tokenizer(gemma, ["Weather?", "Sunny."] * 10)
    ids = end_of_turn_ids(tok)
    assert tok.convert_tokens_to_ids("<end_of_turn>") in ids and tok.eos_token_id in ids
    prompt = render_prompt([{"role": "user", "text": "Weather?"}], tok)
    assert prompt == "<bos><start_of_turn>user\nWeather?<end_of_turn>\n<start_of_turn>model\n"
