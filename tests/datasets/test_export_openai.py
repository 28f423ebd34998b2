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


@pytest.fixture
def lines(client) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    for body in (OPENAI, SHAREGPT, SMOLAGENTS, {**REACT, "source": "mix"}):
        r = client.post("/v1/trajectories", json=body)
        assert r.status_code == 201, r.text
        approve(client, r.json()["id"])
    ds = create(client, eval_fraction=0).json()
    r = client.get(f"/v1/datasets/{ds['id']}/export?format=openai")
    assert r.status_code == 200, r.text
    records = [json.loads(line) for line in client.get(f"/v1/datasets/{ds['id']}/export").text.splitlines()]
    external = {client.get(f"/v1/trajectories/{rec['id']}").json()["external_id"]: k for k, rec in enumerate(records)}
    examples = r.text.splitlines()  # the same order as the records
    return {name: json.loads(examples[k]) for name, k in external.items()}


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
