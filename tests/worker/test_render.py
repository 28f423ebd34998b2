"""Rendering + span masks: every input shape, the majority rule, end-of-turn, collate (truncation: test_truncation)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from tests.worker.render_helpers import KIND, call, eot_token, kind_text, long_trajectory, msg, traj
from worker.training.render import (
    ACTION,
    NONE,
    REASON,
    RenderedExample,
    RenderError,
    collate,
    render_examples,
    render_trajectory,
)

# ---- a slow, independent reference of the mask rules -------------------------------------------


def reference_kinds(tok: Any, messages: list[dict[str, Any]], spans: list[dict[str, Any]]) -> list[int]:
    """Per-character labelling + per-token Counter majority, from the documented templates."""
    if tok.chat_template:
        rendered = tok.apply_chat_template([{"role": m["role"], "content": m["text"]} for m in messages],
                                           tokenize=False)
        heads = ["<|im_start|>" + m["role"] + "\n" for m in messages]
        eot = "<|im_end|>"
    else:
        rendered = (tok.bos_token or "") + "".join(
            "<|" + m["role"] + "|>\n" + m["text"] + (tok.eos_token if m["role"] == "assistant" else "") + "\n"
            for m in messages)
        heads = ["<|" + m["role"] + "|>\n" for m in messages]
        eot = tok.eos_token
    owner: list[tuple[int, int] | None] = [None] * len(rendered)  # (span number, kind)
    pos, n_span = 0, 0
    for i, m in enumerate(messages):
        start = rendered.index(heads[i] + m["text"], pos) + len(heads[i])
        pos = start + len(m["text"])
        mine = [s for s in spans if s["message"] == i]
        trained = m["role"] == "assistant" and m.get("loss", True)
        for s in mine:
            for c in range(start + s["start"], start + s["end"]):
                owner[c] = (n_span, KIND[s["kind"]] if trained else NONE)
            n_span += 1
        if trained and any(s["kind"] != "observation" for s in mine):
            assert rendered.startswith(eot, pos)
            for c in range(pos, pos + len(eot)):
                owner[c] = (n_span, ACTION)
            n_span += 1
    enc = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
    kinds = []
    for a, b in enc["offset_mapping"]:
        counts = Counter(owner[c] for c in range(a, b) if owner[c] is not None)
        if not counts:
            kinds.append(NONE)
            continue
        best = max(counts.items(), key=lambda kv: (kv[1], kv[0][0]))  # ties → later span
        kinds.append(best[0][1])
    return kinds


def openai_like() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return traj(
        msg("system", (None, "You are a helpful agent.")),
        msg("user", (None, "Weather in NYC?")),
        msg("assistant", ("reason", "I should look it up.\n"), ("action", call("get_weather", {"city": "NYC"}))),
        msg("tool", ("observation", '{"temp_c": 21}'), tool_call_id="call_1"),
        msg("assistant", ("action", "It is 21°C.")),
    )


def test_openai_shape_kinds_and_end_of_turn(tok: Any) -> None:
    messages, spans = openai_like()
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096, example_id="t1")
    assert ex is not None and ex.id == "t1" and not ex.truncated
    assert ex.kinds == reference_kinds(tok, messages, spans)
    reason, action = kind_text(tok, ex, REASON), kind_text(tok, ex, ACTION)
    assert reason == "I should look it up.\n"
    assert action == call("get_weather", {"city": "NYC"}) + eot_token(tok) + "It is 21°C." + eot_token(tok)
    context = kind_text(tok, ex, NONE)
    for text in ("You are a helpful agent.", "Weather in NYC?", '{"temp_c": 21}'):
        assert text in context
    # end-of-turn is ACTION, the template newline after it is not
    eot_id = tok.convert_tokens_to_ids(eot_token(tok))
    eot_positions = [i for i, t in enumerate(ex.input_ids) if t == eot_id]
    expected = [ACTION, ACTION] if tok.chat_template is None else [NONE, NONE, ACTION, NONE, ACTION]
    assert [ex.kinds[i] for i in eot_positions] == expected  # ChatML also closes system/user/tool turns
    assert all(ex.kinds[i + 1] == NONE for i in eot_positions)


def test_multi_turn_every_assistant_turn_is_supervised(tok: Any) -> None:
    turns = [msg("system", (None, "Be brief."))]
    answers = [f"Answer number {i} is {i * 7}." for i in range(5)]
    for i, answer in enumerate(answers):
        turns.append(msg("user", (None, f"Question {i}?")))
        turns.append(msg("assistant", ("reason", f"Thought {i}.\n"), ("action", answer)))
    messages, spans = traj(*turns)
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096)
    assert ex is not None
    assert ex.kinds == reference_kinds(tok, messages, spans)
    action = kind_text(tok, ex, ACTION)
    assert action == "".join(a + eot_token(tok) for a in answers)
    assert kind_text(tok, ex, REASON) == "".join(f"Thought {i}.\n" for i in range(5))
    eot_id = tok.convert_tokens_to_ids(eot_token(tok))
    assert sum(1 for t, k in zip(ex.input_ids, ex.kinds, strict=True) if t == eot_id and k == ACTION) == 5


def test_parallel_tool_calls_and_tool_results(tok: Any) -> None:
    calls = call("search", {"q": "Paris"}) + "\n" + call("calculator", {"expression": "3 * 7"})
    messages, spans = traj(
        msg("user", (None, "Paris population times 3?")),
        msg("assistant", ("reason", "<think>\nTwo lookups.\n</think>\n"), ("action", calls)),
        msg("tool", ("observation", "2.1 million"), tool_call_id="a"),
        msg("tool", ("observation", "21"), tool_call_id="b"),
        msg("assistant", ("action", "6.3 million")),
    )
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096)
    assert ex is not None
    assert ex.kinds == reference_kinds(tok, messages, spans)
    action = kind_text(tok, ex, ACTION)
    assert calls in action and "6.3 million" in action
    assert "2.1 million" not in action and "21" not in kind_text(tok, ex, REASON)


def test_react_shape(tok: Any) -> None:
    messages, spans = traj(
        msg("user", (None, "What is the population of Paris?")),
        msg("assistant", ("reason", "Thought: I need to search for the population.\n"),
            ("action", "Action: search[Paris population]")),
        msg("tool", ("observation", "Observation: Paris has 2.1 million inhabitants.")),
        msg("assistant", ("reason", "Thought: I know the answer now.\n"), ("action", "Action: finish[2.1 million]")),
    )
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096)
    assert ex is not None and ex.kinds == reference_kinds(tok, messages, spans)
    assert "Action: search[Paris population]" in kind_text(tok, ex, ACTION)
    assert "Observation" not in kind_text(tok, ex, ACTION) + kind_text(tok, ex, REASON)


def test_smolagents_shape(tok: Any) -> None:
    code = "Code:\n```py\nprint(wiki(query=\"Paris population\"))\n```<end_code>"
    messages, spans = traj(
        msg("system", (None, "You are a helpful agent.")),
        msg("user", (None, "What is the population of Paris?")),
        msg("assistant", ("reason", "Thought: I need the population.\n"), ("action", code)),
        msg("tool", (None, "Call id: call_1\n"), ("observation", "Observation:\nExecution logs:\n2.1 million")),
    )
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096)
    assert ex is not None and ex.kinds == reference_kinds(tok, messages, spans)
    assert kind_text(tok, ex, ACTION) == code + eot_token(tok)


def test_sharegpt_loss_false_turn_is_context_including_its_end_of_turn(tok: Any) -> None:
    messages, spans = traj(
        msg("user", (None, "Hi")),
        msg("assistant", ("action", "Old answer, not trained."), loss=False),
        msg("user", (None, "Again")),
        msg("assistant", ("action", "New answer."), loss=True),
    )
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096)
    assert ex is not None and ex.kinds == reference_kinds(tok, messages, spans)
    assert kind_text(tok, ex, ACTION) == "New answer." + eot_token(tok)
    assert "Old answer, not trained." + eot_token(tok) in kind_text(tok, ex, NONE)


def test_span_less_assistant_turn_stays_unsupervised(tok: Any) -> None:
    messages, spans = traj(
        msg("user", (None, "Hi")),
        msg("assistant", (None, "Uncovered reply.")),
        msg("user", (None, "Again")),
        msg("assistant", ("reason", "Covered reply.")),
    )
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096)
    assert ex is not None and ex.kinds == reference_kinds(tok, messages, spans)
    assert kind_text(tok, ex, ACTION) == eot_token(tok)  # only the supervised turn's end-of-turn
    assert "Uncovered reply." + eot_token(tok) in kind_text(tok, ex, NONE)


def test_no_supervision_returns_none(tok: Any) -> None:
    only_context = traj(msg("user", (None, "Hi")), msg("assistant", (None, "Hello.")))
    only_obs = traj(msg("user", ("observation", "Observation: x")), msg("assistant", (None, "ok")))
    muted = traj(msg("user", (None, "Hi")), msg("assistant", ("action", "Hello."), loss=False))
    for messages, spans in (only_context, only_obs, muted):
        assert render_trajectory(messages, spans, tok, max_seq_len=4096) is None


def test_assistant_text_that_also_occurs_in_template_markup(chatml_tok: Any) -> None:
    # "a" occurs inside the "assistant" header; the action must be the content "a", not the header.
    messages, spans = traj(msg("user", (None, "Say a")), msg("assistant", ("action", "a")))
    ex = render_trajectory(messages, spans, chatml_tok, max_seq_len=512)
    assert ex is not None and ex.kinds == reference_kinds(chatml_tok, messages, spans)
    assert kind_text(chatml_tok, ex, ACTION) == "a<|im_end|>"


def test_random_spans_match_the_reference(tok: Any) -> None:
    rng = random.Random(7)
    words = ["Paris", " population", " 🎉!!", " naïve", " café", "\n", " 21", "Thought:", " search[", "]", " é"]
    for _ in range(25):
        turns = [msg("system", (None, "You are a helpful agent."))]
        for _step in range(rng.randint(1, 4)):
            turns.append(msg(rng.choice(["user", "tool"]), (rng.choice([None, "observation"]),
                                                            "".join(rng.choices(words, k=5)))))
            parts = [(rng.choice(["reason", "action", None]), "".join(rng.choices(words, k=rng.randint(1, 4))))
                     for _ in range(rng.randint(1, 4))]
            turns.append(msg("assistant", *parts))
        messages, spans = traj(*turns)
        ex = render_trajectory(messages, spans, tok, max_seq_len=100_000)
        expected = reference_kinds(tok, messages, spans)
        if ex is None:
            assert not any(expected[1:])
        else:
            assert ex.kinds == expected


def _single_token_texts(tok: Any, text: str) -> list[tuple[int, int]]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def test_majority_rule_on_a_token_straddling_a_boundary(plain_tok: Any) -> None:
    # " population" is one token; cut it 7/4, 4/7 and around the middle (tie → later span)
    word = " population"
    assert _single_token_texts(plain_tok, word) == [(0, len(word))]
    for cut, expected in ((7, REASON), (4, ACTION)):
        messages, spans = traj(msg("user", (None, "q")),
                               msg("assistant", ("reason", "x" + word[:cut]), ("action", word[cut:] + "y")))
        ex = render_trajectory(messages, spans, plain_tok, max_seq_len=512)
        assert ex is not None
        pop = plain_tok.convert_tokens_to_ids("Ġpopulation")
        assert ex.kinds[ex.input_ids.index(pop)] == expected
    # a tie (5 chars each side of one uncovered char) goes to the later span, whatever its kind
    for first, second in (("reason", "action"), ("action", "reason")):
        messages, spans = traj(msg("user", (None, "q")),
                               msg("assistant", (first, "x popu"), (None, "l"), (second, "ation y")))
        ex = render_trajectory(messages, spans, plain_tok, max_seq_len=512)
        assert ex is not None and ex.kinds == reference_kinds(plain_tok, messages, spans)
        assert ex.kinds[ex.input_ids.index(pop)] == KIND[second]


def test_emoji_majority_counts_characters_not_bytes(plain_tok: Any) -> None:
    # " 🎉!!" is one BPE token: " " (uncovered) + 🎉 (reason: 1 char, 4 bytes) + "!!" (action: 2 chars,
    # 2 bytes) → ACTION by characters, where a byte count would say REASON
    assert _single_token_texts(plain_tok, " 🎉!!") == [(0, 4)]
    messages, spans = traj(msg("user", (None, "q")),
                           msg("assistant", ("reason", "ok"), (None, " "), ("reason", "🎉"), ("action", "!!")))
    ex = render_trajectory(messages, spans, plain_tok, max_seq_len=512)
    assert ex is not None and ex.kinds == reference_kinds(plain_tok, messages, spans)
    (token,) = plain_tok(" 🎉!!", add_special_tokens=False)["input_ids"]
    assert ex.kinds[ex.input_ids.index(token)] == ACTION
    # an emoji split into byte tokens: every piece of the character follows the character's span
    messages, spans = traj(msg("user", (None, "q")), msg("assistant", ("reason", "ok"), ("action", "🙂 done")))
    ex = render_trajectory(messages, spans, plain_tok, max_seq_len=512)
    assert ex is not None and ex.kinds == reference_kinds(plain_tok, messages, spans)
    assert kind_text(plain_tok, ex, ACTION) == "🙂 done" + plain_tok.eos_token


def test_template_that_rewrites_a_trained_turn_trains_it_as_the_model_sees_it(tiny_model_dir: Path) -> None:
    # A template that upper-cases content: the assistant text never appears in the full render, so the turn
    # is trained in an example of its own: the template's prompt for it, then its own text and end of turn.
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['content'] | upper }}<|im_end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>{% endif %}")
    messages, spans = traj(msg("user", (None, "hi")), msg("assistant", ("action", "lower case")))
    result = render_examples(messages, spans, tok, max_seq_len=512, example_id="r")
    (ex,) = result.examples
    assert result.stats.split_turns == 1 and ex.turn == 1 and ex.id == "r#1"
    assert tok.decode(ex.input_ids) == "<|im_start|>HI<|im_end|><|im_start|>lower case<|im_end|>"
    assert kind_text(tok, ex, ACTION) == "lower case<|im_end|>"


def test_template_that_fails_is_refused(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = "{{ raise_exception('only user turns') }}"
    messages, spans = traj(msg("user", (None, "hi")), msg("assistant", ("action", "hello")))
    with pytest.raises(RenderError, match="only user turns"):
        render_examples(messages, spans, tok, max_seq_len=512)


def test_template_without_end_marker_has_no_end_of_turn(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    messages, spans = traj(msg("user", (None, "hi")), msg("assistant", ("action", "hello")), msg("user", (None, "x")))
    ex = render_trajectory(messages, spans, tok, max_seq_len=512)
    assert ex is not None
    assert kind_text(tok, ex, ACTION) == "hello"  # the next turn's <|im_start|> is not an end of turn
    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n</s>{% endfor %}"
    ex = render_trajectory(messages, spans, tok, max_seq_len=512)
    assert ex is not None and kind_text(tok, ex, ACTION) == "hello\n</s>"  # whitespace before eos joins it


def test_tools_are_rendered_as_context(tok: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages, spans = openai_like()
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096, tools=tools)
    assert ex is not None
    assert "get_weather" in kind_text(tok, ex, NONE).split("Weather in NYC?")[0]
    assert kind_text(tok, ex, REASON) == "I should look it up.\n"


def test_invalid_spans_are_refused(plain_tok: Any) -> None:
    messages = [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "hello"}]
    bad = [
        [{"message": 5, "start": 0, "end": 1, "kind": "action"}],
        [{"message": 1, "start": 0, "end": 9, "kind": "action"}],
        [{"message": 1, "start": 0, "end": 3, "kind": "action"},
         {"message": 1, "start": 2, "end": 5, "kind": "reason"}],
        [{"message": 1, "start": 0, "end": 2, "kind": "thought"}],
    ]
    for spans in bad:
        with pytest.raises(RenderError):
            render_trajectory(messages, spans, plain_tok, max_seq_len=512)


def test_decoded_action_tokens_contain_the_action_texts(tok: Any) -> None:
    messages, spans = long_trajectory(3)
    ex = render_trajectory(messages, spans, tok, max_seq_len=100_000)
    assert ex is not None
    ids = torch.tensor(ex.input_ids)
    kinds = torch.tensor(ex.kinds)
    decoded = tok.decode(ids[kinds == ACTION].tolist())
    for s in spans:
        if s["kind"] == "action":
            assert messages[s["message"]]["text"][s["start"]: s["end"]] in decoded
    assert ex.n_action == int((kinds == ACTION).sum()) and ex.n_reason == int((kinds == REASON).sum())


def test_collate_right_pads() -> None:
    a = RenderedExample(input_ids=[5, 6, 7], kinds=[0, 1, 2], truncated=False, id="a")
    b = RenderedExample(input_ids=[8], kinds=[2], truncated=False, id="b")
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["kinds"].tolist() == [[0, 1, 2], [2, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


# ---- payload → app parser → render ---------------------------------------------------------------

PAYLOADS: dict[str, dict[str, Any]] = {
    "openai": {
        "messages": [
            {"role": "system", "content": "You are a helpful agent."},
            {"role": "user", "content": "Weather in NYC? ☀️"},
            {"role": "assistant", "content": "I should look it up.", "reasoning_content": "NYC weather needed.",
             "tool_calls": [
                 {"id": "c1", "type": "function",
                  "function": {"name": "get_weather", "arguments": "{\"city\": \"NYC\"}"}},
                 {"id": "c2", "type": "function",
                  "function": {"name": "get_time", "arguments": "{\"tz\": \"EST\"}"}},
             ]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"temp_c\": 21}"},
            {"role": "tool", "tool_call_id": "c2", "content": "09:00"},
            {"role": "assistant", "content": "It is 21°C in NYC."},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    },
    "react": {
        "task": "Which magazine was started first?",
        "text": ("Thought: I need to search both magazines.\nAction: search[Arthur's Magazine]\n"
                 "Observation: Arthur's Magazine was first published in 1844.\n"
                 "Thought: 1844 is earlier.\nAction: finish[Arthur's Magazine]"),
    },
    "smolagents": {
        "task": "Population of Paris?",
        "messages": [
            {"role": "assistant", "content": [{"type": "text", "text": (
                "Thought: I need the population.\nCode:\n```py\nprint(wiki(query=\"Paris population\"))\n"
                "```<end_code>")}]},
            {"role": "tool-call", "content": [{"type": "text", "text": "Calling tools:\n[{'id': 'call_1'}]"}]},
            {"role": "tool-response", "content": [{"type": "text", "text": (
                "Call id: call_1\nObservation:\nExecution logs:\n2.1 million")}]},
            {"role": "assistant",
             "content": "Thought: done.\nCode:\n```py\nfinal_answer(\"2.1 million\")\n```<end_code>"},
        ],
    },
    "sharegpt": {
        "system": "You are a helpful agent.",
        "conversations": [
            {"from": "human", "value": "Weather in NYC?"},
            {"from": "gpt", "value": "Let me check.", "loss": False},
            {"from": "human", "value": "Go on."},
            {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"NYC\"}}"},
            {"from": "observation", "value": "{\"temp_c\": 21}"},
            {"from": "gpt", "value": "It is 21°C."},
        ],
    },
}


@pytest.mark.parametrize("fmt", sorted(PAYLOADS))
def test_payload_parse_render(tok: Any, fmt: str) -> None:
    import contract.formats as formats  # the project's own module: an import error must fail, not skip
    try:
        parsed = formats.parse(fmt, PAYLOADS[fmt])
    except formats.FormatError as exc:  # the parser owns its payload rules; surface them clearly
        pytest.fail(f"{fmt} payload rejected by the parser: {exc}")
    messages, spans = parsed.messages, parsed.spans
    ex = render_trajectory(messages, spans, tok, max_seq_len=4096, tools=parsed.tools)
    assert ex is not None
    if not parsed.tools:
        assert ex.kinds == reference_kinds(tok, messages, spans)
    supervised = kind_text(tok, ex, REASON) + kind_text(tok, ex, ACTION)
    for s in spans:
        m = messages[s["message"]]
        piece = m["text"][s["start"]: s["end"]]
        if s["kind"] == "observation" or m.get("loss") is False:
            assert piece not in supervised
        else:
            assert piece in kind_text(tok, ex, KIND[s["kind"]])
    trained = [m for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("loss", True)
               and any(s["message"] == i and s["kind"] != "observation" for s in spans)]
    eot_id = tok.convert_tokens_to_ids(eot_token(tok))
    assert sum(1 for t, k in zip(ex.input_ids, ex.kinds, strict=True) if t == eot_id and k == ACTION) == len(trained)
