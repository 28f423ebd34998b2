"""Fuzz-ish robustness: random and mutated payloads either raise FormatError or parse into trajectories
that satisfy every invariant (valid tiled spans, deterministic re-parse, export round trip)."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from contract.formats import FORMATS, FormatError, parse
from tests.trajectories._checks import check

CALLING = "Calling tools:\n[{'id': 'call_1', 'type': 'function', 'function': {'name': 'f', 'arguments': 'x'}}]"
POOL: list[Any] = [
    None, True, False, 0, -1, 3, 2.5, "", " ", "x", "\n", "🙂 é", "Thought: t", "Thought 1: t\nAction 1: a[b]",
    "Observation: o", "Observation 2: o\nThought: t", "Action: a\nAction Input: {\n}", "Final Answer: 42",
    "Question: q", "{}", '{"a": 1}', '{"name": "f", "arguments": {}}', "[1]", "NaN", "user", "assistant",
    "tool", "system", "developer", "human", "gpt", "function_call", "observation", "tool-call", "tool-response",
    "function", "text", "call_1", "call_2", CALLING, "<think>\nr\n</think>\n", "<think>r",
    "Code:\n```py\nx\n```<end_code>",
    "```py", "<code>\n1\n</code>", "<tool_call>\n{}\n</tool_call>", "\x00", "\ud800", [], {}, [1, "a"],
    {"type": "text", "text": "p"}, {"type": "function", "function": {"name": "f", "arguments": "{}"}},
]
KEYS = ["role", "content", "tool_calls", "function_call", "id", "type", "function", "name", "arguments",
        "tool_call_id", "reasoning_content", "reasoning", "from", "value", "loss", "text", "messages",
        "conversations", "task", "tools", "system"]


def call(cid: str, name: str = "f", arguments: str = '{"k": 1}') -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


SEEDS: dict[str, dict[str, Any]] = {
    "openai": {"messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "q 🙂"}]},
        {"role": "assistant", "reasoning_content": "r", "content": "c", "tool_calls": [call("call_1"), call("call_2")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: x"}, {"role": "tool", "tool_call_id": "call_2"},
        {"role": "user", "content": "Observation: o"}, {"role": "assistant", "content": "Thought: t\nFinal Answer: a"},
    ], "tools": [{"type": "function"}]},
    "react": {"task": "t", "text": "Thought 1: a\nAction 1: s[x]\nObservation 1: o\nThought: b\nFinal Answer: c"},
    "smolagents": {"task": "t", "messages": [
        {"role": "system", "content": "s"},
        {"role": "assistant", "content": [{"type": "text", "text": "Thought: t\nCode:\n```py\nx\n```<end_code>"}]},
        {"role": "tool-call", "content": CALLING}, {"role": "tool-response", "content": "Observation:\n1"},
    ]},
    "sharegpt": {"system": "s", "tools": "[]", "conversations": [
        {"from": "human", "value": "q"}, {"from": "gpt", "value": "Thought: t\nAction: a", "loss": False},
        {"from": "function_call", "value": '[{"name": "f", "arguments": {}}]'}, {"from": "observation", "value": "o"},
        {"from": "gpt", "value": "done", "loss": True},
    ]},
    "swe-agent": {"history": [
        {"role": "system", "content": "s", "message_type": "system_prompt"},
        {"role": "user", "content": "demo\n```\nls\n```", "is_demo": True},
        {"role": "user", "content": "issue", "message_type": "observation"},
        {"role": "assistant", "content": "t\n\n```\nls\n```", "thought": "t", "action": "ls"},
        {"role": "user", "content": "a.py", "message_type": "observation"},
        {"role": "assistant", "content": "c", "tool_calls": [call("call_1")], "message_type": "action"},
        {"role": "tool", "content": [{"type": "text", "text": "o"}], "tool_call_ids": ["call_1"]},
        {"role": "assistant", "content": "done\n<command>\nsubmit\n</command>"},
    ], "trajectory": [{"response": "r", "action": "ls", "observation": "o"}]},
    "anthropic": {"system": [{"type": "text", "text": "s"}], "tools": [{"name": "f"}], "messages": [
        {"role": "user", "content": "q 🙂"},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "d"}, {"type": "thinking", "thinking": "r", "signature": "g"},
            {"type": "text", "text": "c"}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {"k": 1}},
            {"type": "thinking", "thinking": "Thought: t", "signature": "g"},
            {"type": "tool_use", "id": "call_2", "name": "f", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "Error: x", "is_error": True},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "o"}]},
            {"type": "text", "text": "Observation: o"}]},
        {"role": "assistant", "content": "Thought: t\nFinal Answer: a"},
    ]},
    "openai-responses": {"instructions": "s", "tools": [{"type": "function"}], "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "q 🙂"}]},
        {"type": "reasoning", "id": "rs", "encrypted_content": "e", "summary": [
            {"type": "summary_text", "text": "r"}, {"type": "summary_text", "text": "<think>r"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "c"}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"k": 1}'},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}]},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "f", "input": "x"},
        {"type": "function_call_output", "call_id": "call_1", "output": "Error: x"},
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "o"}]},
    ], "output": [{"role": "assistant", "content": "Thought: t\nFinal Answer: a"}]},
    "otlp": {"tools": [{"type": "function", "name": "f"}], "messages": [
        {"role": "system", "parts": [{"type": "text", "content": "s"}]},
        {"role": "user", "parts": [{"type": "text", "content": "q 🙂"}]},
        {"role": "assistant", "parts": [
            {"type": "reasoning", "content": "r"}, {"type": "text", "content": "c"},
            {"type": "tool_call", "id": "call_1", "name": "f", "arguments": '{"k": 1}'},
            {"type": "tool_call", "id": "call_2", "name": "f", "arguments": {"z": 1, "a": [2]}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "Error: x"}]},
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "call_2", "response": {"o": 1}},
                                   {"type": "text", "content": "Observation: o"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "Thought: t\nFinal Answer: a"}]},
    ]},
}


def random_value(rng: random.Random, depth: int) -> Any:
    if depth <= 0 or rng.random() < 0.5:
        return copy.deepcopy(rng.choice(POOL))
    if rng.random() < 0.5:
        return [random_value(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS): random_value(rng, depth - 1) for _ in range(rng.randrange(4))}


def containers(node: Any, out: list[Any]) -> list[Any]:
    if isinstance(node, (dict, list)):
        out.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            containers(child, out)
    return out


def mutate(rng: random.Random, payload: dict[str, Any], n: int) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    for _ in range(n):
        node = rng.choice(containers(payload, []))
        op = rng.randrange(4)
        if isinstance(node, dict):
            if op == 0 and node:
                del node[rng.choice(list(node))]
            elif op == 1 and node:
                node[rng.choice(list(node))] = random_value(rng, 2)
            else:
                node[rng.choice(KEYS)] = random_value(rng, 2)
        elif op == 0 and node:
            del node[rng.randrange(len(node))]
        elif op == 1 and node:
            node[rng.randrange(len(node))] = random_value(rng, 2)
        elif op == 2 and node:
            node.insert(rng.randrange(len(node) + 1), copy.deepcopy(rng.choice(node)))
        else:
            node.insert(rng.randrange(len(node) + 1), random_value(rng, 2))
    return payload


def only_format_errors(fmt: str, payload: Any) -> bool:
    """True when `payload` parsed (and then passed every invariant), False when it raised FormatError."""
    try:
        parse(fmt, copy.deepcopy(payload))
    except FormatError:
        return False
    check(fmt, payload)
    return True


@pytest.mark.parametrize("fmt", FORMATS)
def test_mutated_and_random_payloads(fmt: str) -> None:
    rng = random.Random(f"fuzz:{fmt}")
    parsed = 0
    for k in range(1500):
        payload = mutate(rng, SEEDS[fmt], rng.randrange(1, 4)) if k % 5 else random_value(rng, 4)
        try:
            parsed += only_format_errors(fmt, payload)
        except Exception as exc:  # report the input that broke the contract
            raise AssertionError(f"{fmt} payload #{k} broke the contract: {payload!r}") from exc
    assert parsed > 100  # the mutations must exercise the success path too, not only errors


LINES = ["Thought: t", "Thought 2: t 🙂", "Action: search", "Action 3: Search[x]", "Action Input: {", '  "q": 1',
         "}", "Observation: o", "Observation 1: o", "Final Answer: 42", "plain line", "", "  indented Thought: x",
         "Thought:", "Observation:", "Observation: Thought: inner", "Question: q", "Action Input: x", "\r"]


def test_random_react_texts() -> None:
    rng = random.Random("fuzz:react-text")
    parsed = 0
    for k in range(1500):
        text = "\n".join(rng.choice(LINES) for _ in range(rng.randrange(1, 14)))
        payload = {"text": text + rng.choice(["", "\n"])} | ({"task": "t"} if rng.random() < 0.8 else {})
        try:
            parsed += only_format_errors("react", payload)
        except Exception as exc:
            raise AssertionError(f"react text #{k} broke the contract: {payload!r}") from exc
    assert parsed > 500
