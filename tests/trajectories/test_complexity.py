"""compute_complexity: counts, the conservative tool-error rule, and the score."""

from __future__ import annotations

import pytest

from contract.complexity import compute_complexity, looks_like_error
from contract.formats import parse


@pytest.mark.parametrize("text", [
    "Traceback (most recent call last):\n  File \"x.py\", line 1\nZeroDivisionError: division by zero",
    "Error: unknown item 'plumm'",
    "Call id: call_1\nError:\nCode execution failed at line 'x'",
    "ValueError: bad input",
    "requests.exceptions.HTTPError: 404",
    "Observation 2: Error: page not found",
    "error: pathspec 'main' did not match",
    "ERROR",
    "Failed to fetch https://example.com",
    "Process exited with code 2",
    "exit status: 1",
    "returncode=-9",
    '{"error": "rate limited"}',
])
def test_failures_are_recognized(text: str) -> None:
    assert looks_like_error(text)


@pytest.mark.parametrize("text", [
    "",
    "The Error function erf is used in statistics.",
    "The attempt failed in 1912, historians say.",
    "exit code 0",
    "No errors found.",
    '{"error": null, "result": 3}',
    '{"result": {"error": "x"}}',
    "Exceptional results this quarter.",
])
def test_ordinary_text_is_not_an_error(text: str) -> None:
    assert not looks_like_error(text)


def test_counts_and_score_on_a_parsed_trajectory() -> None:
    def call(cid: str) -> dict:
        return {"id": cid, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}

    pt = parse("openai", {"messages": [
        {"role": "user", "content": "Prices?"},
        {"role": "assistant", "content": "Look up.", "tool_calls": [call("a"), call("b")]},
        {"role": "tool", "tool_call_id": "a", "content": "Error: unknown item"},
        {"role": "tool", "tool_call_id": "b", "content": "3"},
        {"role": "user", "content": "Observation: Traceback (most recent call last): boom"},
        {"role": "user", "content": "Error: but this user turn is not an observation"},
        {"role": "assistant", "content": "5"},
    ]})
    c = compute_complexity(pt.messages, pt.spans)
    n_chars = sum(len(m["text"]) for m in pt.messages)
    assert c == {"n_actions": 3, "n_steps": 2, "n_chars": n_chars, "n_tool_errors": 2,
                 "score": 3 + 2 * 2 + n_chars / 2000}


def test_score_is_monotone_in_each_count() -> None:
    base = [{"role": "user", "text": "q"}, {"role": "assistant", "text": "a"}, {"role": "tool", "text": "ok"}]
    spans = [{"message": 1, "start": 0, "end": 1, "kind": "action"}]
    s0 = compute_complexity(base, spans)["score"]
    more_actions = compute_complexity(base, [*spans, {"message": 1, "start": 0, "end": 1, "kind": "action"}])
    with_error = compute_complexity([*base[:2], {"role": "tool", "text": "Error: x"}], spans)
    longer = compute_complexity([*base[:2], {"role": "tool", "text": "ok" * 500}], spans)
    assert s0 < more_actions["score"] and s0 < with_error["score"] and s0 < longer["score"]
    assert compute_complexity([], [])["score"] == 0
