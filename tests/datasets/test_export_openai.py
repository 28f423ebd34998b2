"""The OpenAI-shape dataset export passes OpenAI's fine-tuning file checks (issue #10, part 1) on
trajectories from every origin: parallel calls, arguments whose keys are out of sorted order (which
the jsonb column reorders), non-JSON arguments, calls without ids, ids reused across turns, stray
tool messages, ShareGPT function_call turns, ReAct and smolagents observations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.app.payloads import REACT
from tests.datasets.helpers import approve, create
from tests.datasets.openai_validator import openai_line_errors

ODD = '{"zeta": 1, "alpha": {"y": [2, {"d": 1, "c": 2}], "b": 3}}'  # no key in sorted order


def _call(cid: str | None, name: str, arguments: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {"id": cid, **call} if cid is not None else call


OPENAI = {"format": "openai", "source": "mix", "external_id": "openai", "messages": [
    {"role": "system", "content": ""},
    {"role": "user", "content": "Book two flights."},
    {"role": "assistant", "content": "Searching both.", "tool_calls": [
        _call("call_0", "search", ODD), _call("call_1", "search", '{"to": "LHR", "from": "JFK"}')]},
    {"role": "tool", "tool_call_id": "call_1", "content": "LHR ok"},  # answered out of order
    {"role": "tool", "tool_call_id": "call_0", "content": "ZRH ok"},
    {"role": "assistant", "content": None, "tool_calls": [
        _call("call_0", "book", {"seat": "2A", "flight": "LX17"}),  # an object, keys unsorted; id reused
        _call(None, "note", "not json {")]},
    {"role": "tool", "tool_call_id": "call_0", "content": "booked"},
    {"role": "tool", "content": "noted"},  # no id: answers the next pending call
    {"role": "tool", "content": "stray"},  # answers nothing
    {"role": "assistant", "content": ""},
    {"role": "assistant", "content": "Both booked."},
]}
SHAREGPT = {"format": "sharegpt", "source": "mix", "external_id": "sharegpt", "system": "Use tools.",
            "tools": '[{"type": "function", "function": {"name": "convert"}}]',
            "conversations": [
                {"from": "human", "value": "Convert 5 USD and 3 EUR."},
                {"from": "function_call", "value": '[{"name": "convert", "arguments": {"to": "JPY", "amount": 5}},'
                                                   ' {"name": "convert", "arguments": "{\'amount\': 3}"}]'},
                {"from": "observation", "value": "750 JPY"},
                {"from": "observation", "value": "480 JPY"},
                {"from": "gpt", "value": "750 and 480 JPY."}]}
SMOLAGENTS = {"format": "smolagents", "source": "mix", "external_id": "smolagents", "messages": [
    {"role": "user", "content": "New task:\nAdd 2 and 2."},
    {"role": "assistant", "content": "Thought: easy.\nCode:\n```py\nfinal_answer(2 + 2)\n```<end_code>"},
    {"role": "tool-call", "content": "Calling tools:\n[{'id': 'call_1', 'type': 'function', 'function': "
                                     "{'name': 'python_interpreter', 'arguments': 'final_answer(2 + 2)'}}]"},
    {"role": "tool-response", "content": "Call id: call_1\nObservation:\nLast output from code snippet:\n4"}]}


def _openai_lines(client: Any, bodies: Any) -> dict[str, dict[str, Any]]:
    """Ingest and approve ``bodies``, snapshot them, and give each one's OpenAI-shape line by external_id."""
    for body in bodies:
        r = client.post("/v1/trajectories", json=body)
        assert r.status_code == 201, r.text
        approve(client, r.json()["id"])
    ds = create(client, eval_fraction=0).json()
    r = client.get(f"/v1/datasets/{ds['id']}/export?format=openai")
    assert r.status_code == 200, r.text
    records = [json.loads(line) for line in client.get(f"/v1/datasets/{ds['id']}/export").text.splitlines()]
    names = [client.get(f"/v1/trajectories/{rec['id']}").json()["external_id"] for rec in records]
    return dict(zip(names, (json.loads(line) for line in r.text.splitlines()), strict=True))  # same order


@pytest.fixture
def lines(client) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    return _openai_lines(client, (OPENAI, SHAREGPT, SMOLAGENTS, {**REACT, "source": "mix"}))


def test_every_line_passes_the_validator(lines) -> None:  # type: ignore[no-untyped-def]
    assert set(lines) == {"openai", "sharegpt", "smolagents", "hp-7"}
    for name, line in lines.items():
        assert openai_line_errors(line) == [], (name, line)


def test_openai_origin_keeps_calls_arguments_and_answers(lines) -> None:  # type: ignore[no-untyped-def]
    msgs = lines["openai"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "tool", "assistant", "tool", "tool", "user",
                                         "assistant"]
    first, second = msgs[1]["tool_calls"], msgs[4]["tool_calls"]
    assert [c["function"]["arguments"] for c in first] == [ODD, '{"to": "LHR", "from": "JFK"}']  # as received
    assert [c["id"] for c in first] == ["call_0", "call_1"]
    assert [msgs[2]["tool_call_id"], msgs[3]["tool_call_id"]] == ["call_1", "call_0"]
    assert second[0]["function"]["arguments"] == '{"seat": "2A", "flight": "LX17"}'  # object: key order kept
    assert second[1]["function"]["arguments"] == '"not json {"'  # a JSON string literal
    assert second[0]["id"] != "call_0" and msgs[5]["tool_call_id"] == second[0]["id"]  # reused id renamed
    assert msgs[6]["tool_call_id"] == second[1]["id"] and msgs[7] == {"role": "user", "content": "stray"}
    assert msgs[4]["content"] is None and msgs[1]["content"] == "Searching both."


def test_sharegpt_smolagents_and_react_origins(lines) -> None:  # type: ignore[no-untyped-def]
    share = lines["sharegpt"]["messages"]
    assert [m["role"] for m in share] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    calls = share[2]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_2_0", "call_2_1"]
    assert [c["function"]["arguments"] for c in calls] == ['{"to": "JPY", "amount": 5}', "\"{'amount': 3}\""]
    assert [share[3]["tool_call_id"], share[4]["tool_call_id"]] == ["call_2_0", "call_2_1"]
    assert lines["sharegpt"]["tools"] == [{"type": "function", "function": {"name": "convert"}}]
    smol = lines["smolagents"]["messages"]
    assert [m["role"] for m in smol] == ["user", "assistant", "user"]  # code is the action; no call shape
    assert smol[1]["content"].endswith("<end_code>") and "tool_calls" not in smol[1]
    assert [m["role"] for m in lines["hp-7"]["messages"]][:3] == ["user", "assistant", "user"]


@pytest.mark.parametrize("line, problem", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "x", "content": "r"},
                   {"role": "assistant", "content": "a"}]}, "answers no pending call"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": {"k": 1}}}]}]}, "must be a string"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{k"}}]}]}, "JSON text"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": "q"}]}, "example_missing_assistant_message"),
    ({"messages": [{"role": "assistant", "content": "a", "weight": 2}]}, "weight"),
    ({"messages": [{"role": "function", "content": "a"}, {"role": "assistant", "content": "a"}]}, "unrecognized_role"),
    ({"messages": [{"role": "assistant", "content": "a", "tool_call_id": "x"}]}, "message_unrecognized_key"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "used twice"),
])
def test_the_validator_catches_what_openai_refuses(line: dict[str, Any], problem: str) -> None:
    errors = openai_line_errors(line)
    assert any(problem in e for e in errors), errors


INTERLEAVED = [  # assistant turns whose calls are not all at the end of the turn: no `calls_at`
    {"format": "anthropic", "source": "interleaved", "external_id": "thinking", "messages": [
        {"role": "user", "content": "A and B?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "A first.", "signature": "sigA"},
            {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {"zeta": 1, "alpha": "A"}},
            {"type": "thinking", "thinking": "Now B.", "signature": "sigB"},
            {"type": "tool_use", "id": "toolu_b", "name": "fetch", "input": '{"q": "B", "a": [1]}'}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": "b"},
                                     {"type": "tool_result", "tool_use_id": "toolu_a", "content": "a"}]},
        {"role": "assistant", "content": "a and b"}]},
    {"format": "anthropic", "source": "interleaved", "external_id": "text", "messages": [
        {"role": "user", "content": "C?"},
        {"role": "assistant", "content": [
            {"type": "redacted_thinking", "data": "EmwK"},
            {"type": "text", "text": "Looking up C."},
            {"type": "tool_use", "id": "toolu_c", "name": "lookup", "input": {"q": "C"}},
            {"type": "text", "text": "And checking it."},
            {"type": "tool_use", "id": "toolu_d", "name": "check", "input": {}},
            {"type": "text", "text": "Both sent."}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_c", "content": "c"},
                                     {"type": "tool_result", "tool_use_id": "toolu_d", "content": "ok"}]}]},
    {"format": "openai-responses", "source": "interleaved", "external_id": "responses", "input": "E?", "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "E first."}]},
        {"type": "function_call", "call_id": "call_e", "name": "lookup", "arguments": '{"q": "E"}'},
        {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Then F."}]},
        {"type": "function_call", "call_id": "call_f", "name": "lookup", "arguments": '{"q": "F"}'},
        {"type": "function_call_output", "call_id": "call_e", "output": "e"},
        {"type": "function_call_output", "call_id": "call_f", "output": "f"}]},
]


def test_calls_interleaved_with_reasoning_or_text_keep_their_call_shape(client) -> None:  # type: ignore[no-untyped-def]
    lines = _openai_lines(client, INTERLEAVED)
    assert set(lines) == {"thinking", "text", "responses"}
    for name, line in lines.items():
        assert openai_line_errors(line) == [], (name, line)
        assert not any("<tool_call>" in (m["content"] or "") for m in line["messages"]), (name, line)

    def calls(name: str) -> list[tuple[str, str, str]]:
        return [(c["id"], c["function"]["name"], c["function"]["arguments"])
                for m in lines[name]["messages"] for c in m.get("tool_calls", [])]

    def answers(name: str) -> list[tuple[str, str]]:
        return [(m["tool_call_id"], m["content"]) for m in lines[name]["messages"] if m["role"] == "tool"]

    assert calls("thinking") == [("toolu_a", "lookup", '{"zeta": 1, "alpha": "A"}'),
                                 ("toolu_b", "fetch", '{"q": "B", "a": [1]}')]  # as received, key order kept
    assert answers("thinking") == [("toolu_b", "b"), ("toolu_a", "a")]
    thinking = lines["thinking"]["messages"]
    assert [m["role"] for m in thinking] == ["user", "assistant", "tool", "tool", "assistant"]
    assert thinking[1]["content"] == "<think>\nA first.\n</think>\n<think>\nNow B.\n</think>"
    assert calls("text") == [("toolu_c", "lookup", '{"q": "C"}'), ("toolu_d", "check", "{}")]
    assert answers("text") == [("toolu_c", "c"), ("toolu_d", "ok")]
    assert lines["text"]["messages"][1]["content"] == "Looking up C.\nAnd checking it.\nBoth sent."
    assert calls("responses") == [("call_e", "lookup", '{"q": "E"}'), ("call_f", "lookup", '{"q": "F"}')]
    assert answers("responses") == [("call_e", "e"), ("call_f", "f")]
    assert lines["responses"]["messages"][1]["content"] == "<think>\nE first.\n</think>\n<think>\nThen F.\n</think>"
