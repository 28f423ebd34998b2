"""Hypothesis strategies for the round-trip property: payloads of the openai, sharegpt, react and
smolagents formats with tool calls whose arguments come as JSON strings (any spacing, keys in any
order), objects and non-JSON strings, parallel calls answered in any order, reasoning, loss flags,
observation user turns, and NUL / lone surrogates in tool output (sanitized on ingest).
`jsonb_order` reorders every object's keys the way Postgres' jsonb stores them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Text that any field may hold (no NUL, no lone surrogate); some labels and markup to tempt the segmenter.
_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_WORDS = st.sampled_from(["Thought: ", "Action: ", "Final Answer: ", "<think>", "</think>", "\n", "```py\n",
                          "<tool_call>", "é", "🙂", "{", '"', " ", "x"])
TEXT = st.lists(st.one_of(st.text(_CHARS, max_size=8), _WORDS), max_size=6).map("".join)
WORD = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=8)
# Tool output: may hold what Postgres cannot store (sanitized to U+FFFD, counted).
DIRTY = st.lists(st.one_of(TEXT, st.sampled_from(["\x00", "\ud800", "\udfff"])), max_size=4).map("".join)

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63),
                     st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)
OBJECTS = st.dictionaries(TEXT, JSON, max_size=5)


@st.composite
def arguments_string(draw: st.DrawFn) -> str:
    """OpenAI `arguments`: JSON text in any spelling (keys unsorted, any separators), or not JSON at all."""
    kind = draw(st.sampled_from(["json", "compact", "indent", "not_json"]))
    if kind == "not_json":
        return draw(st.sampled_from(["not json {", "{'city': 'Paris'}", "", "NaN", "a\nb"]))
    value = draw(st.one_of(OBJECTS, JSON))
    if kind == "compact":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=draw(st.booleans()))
    return json.dumps(value, indent=2 if kind == "indent" else None, ensure_ascii=draw(st.booleans()))


def jsonb_order(value: Any) -> Any:
    """`value` with every object's keys in jsonb's storage order (shorter keys first, then bytewise)."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {k: jsonb_order(value[k]) for k in keys}
    if isinstance(value, list):
        return [jsonb_order(v) for v in value]
    return value


def _shuffled(draw: st.DrawFn, item: dict[str, Any]) -> dict[str, Any]:
    keys = draw(st.permutations(list(item)))
    return {k: item[k] for k in keys}


@st.composite
def openai_payload(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": draw(TEXT)}]
    n_calls = 0
    for _ in range(draw(st.integers(1, 4))):
        msg: dict[str, Any] = {"role": "assistant", "content": draw(st.one_of(st.none(), TEXT))}
        if draw(st.booleans()):
            msg[draw(st.sampled_from(["reasoning_content", "reasoning"]))] = draw(TEXT)
        calls = []
        for _ in range(draw(st.integers(0, 3))):
            n_calls += 1
            args = draw(st.one_of(arguments_string(), OBJECTS))
            call = {"type": "function", "function": _shuffled(draw, {"name": draw(WORD), "arguments": args})}
            if draw(st.integers(0, 4)):
                call["id"] = f"call_{n_calls}"
            calls.append(_shuffled(draw, call))
        if calls:
            msg["tool_calls"] = calls
        messages.append(_shuffled(draw, msg))
        answers = [{"role": "tool", "tool_call_id": c["id"], "content": draw(DIRTY)} for c in calls if "id" in c]
        messages.extend(draw(st.permutations(answers)))
        if draw(st.booleans()):
            messages.append({"role": "user", "content": "Observation: " + draw(DIRTY)})
    payload: dict[str, Any] = {"messages": messages}
    if draw(st.booleans()):
        payload["tools"] = [{"type": "function", "function": {"name": draw(WORD), "parameters": draw(OBJECTS)}}]
    return payload


@st.composite
def sharegpt_payload(draw: st.DrawFn) -> dict[str, Any]:
    turns: list[dict[str, Any]] = [{"from": "human", "value": draw(TEXT)}]
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            items = [_shuffled(draw, {"name": draw(WORD), "arguments": draw(st.one_of(OBJECTS, TEXT))})
                     for _ in range(draw(st.integers(1, 3)))]
            value = json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=draw(st.booleans()))
            turns.append({"from": "function_call", "value": value})
            turns.extend({"from": "observation", "value": draw(DIRTY)} for _ in items)
        turns.append({"from": "gpt", "value": draw(TEXT)})
    for turn in turns:
        if draw(st.integers(0, 3)) == 0:
            turn["loss"] = draw(st.booleans())
    payload: dict[str, Any] = {"conversations": [_shuffled(draw, t) for t in turns]}
    if draw(st.booleans()):
        payload["system"] = draw(TEXT)
    if draw(st.booleans()):
        payload["tools"] = json.dumps([{"name": draw(WORD), "parameters": draw(OBJECTS)}])
    return payload


_LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


@st.composite
def react_payload(draw: st.DrawFn) -> dict[str, Any]:
    lines = []
    for k in range(1, draw(st.integers(1, 4)) + 1):
        n = f" {k}" if draw(st.booleans()) else ""
        lines += [f"Thought{n}: {draw(_LINE)}", f"Action{n}: {draw(WORD)}",
                  f"Action Input{n}: {json.dumps(draw(OBJECTS))}",
                  f"Observation{n}: " + draw(DIRTY).replace("\n", " ").replace("\r", " ")]
    lines.append(f"Final Answer: {draw(_LINE)}")
    return {"task": draw(TEXT), "text": "\n".join(lines)}


@st.composite
def smolagents_payload(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "New task:\n" + draw(TEXT)}]
    for k in range(1, draw(st.integers(1, 3)) + 1):
        code = f"print({draw(WORD)!r})"
        step = f"Thought: {draw(TEXT)}\nCode:\n```py\n{code}\n```<end_code>"
        messages.append({"role": "assistant", "content": [{"type": "text", "text": step}]})
        listing = [{"id": f"call_{k}", "type": "function",
                    "function": {"name": "python_interpreter", "arguments": draw(st.one_of(OBJECTS, st.just(code)))}}]
        messages.append({"role": "tool-call", "content": "Calling tools:\n" + repr(listing)})
        messages.append({"role": "tool-response", "content": f"Call id: call_{k}\nObservation:\n{draw(TEXT)}"})
    return {"messages": messages}


PAYLOADS = {"openai": openai_payload(), "sharegpt": sharegpt_payload(), "react": react_payload(),
            "smolagents": smolagents_payload()}
