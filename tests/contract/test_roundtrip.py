"""The round-trip guarantee (DESIGN §2, issue #10): a trajectory's export in its own format,
re-ingested, gives the same ``content_sha256`` and the same auto spans, whatever order the database
keeps JSON keys in.

- contract level, a property over generated payloads (tests/contract/generated.py): parse → keys
  reordered as jsonb stores them → export → JSON → parse;
- API level, for every format in ``contract.formats.FORMATS`` (formats added later join through their
  real logs, ``tests/data/logs/<family>/*.json`` ``request``): POST → GET export → POST under a new
  ``source`` through real Postgres, including the failure modes seen in the wild (arguments with
  keys out of sorted order, arguments that are not JSON, ShareGPT function_call turns, tool messages
  answering call ids, NUL bytes in tool output), and rows stored before ``calls_at`` existed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from contract.formats import FORMATS, canonical_sha256, export, parse
from tests.annotations.helpers import sql
from tests.app.payloads import OPENAI, REACT
from tests.contract.generated import PAYLOADS, jsonb_order

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs"
ODD = '{"zeta": 1, "alpha": {"y": [2, {"d": 1, "c": 2}], "b": 3}}'
PARALLEL = '[{"name": "a", "arguments": "{\'x\': 1}"}, {"name": "b", "arguments": {"z": 1, "y": 2}}]'


def _roundtrip(fmt: str, payload: dict[str, Any]) -> None:
    pt = parse(fmt, payload)
    stored = jsonb_order(json.loads(json.dumps(pt.messages)))
    exported = json.loads(json.dumps(export(fmt, stored, jsonb_order(pt.tools), pt.spans)))
    back = parse(fmt, exported)
    assert canonical_sha256(back.messages) == canonical_sha256(pt.messages), (exported, pt.messages)
    assert back.spans == pt.spans
    assert back.sanitized == 0  # an export holds nothing that needs sanitizing
    assert [m["text"] for m in back.messages] == [m["text"] for m in pt.messages]


@pytest.mark.parametrize("fmt", sorted(PAYLOADS))
def test_generated_payloads_round_trip_through_jsonb_order(fmt: str) -> None:
    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(PAYLOADS[fmt])
    def prop(payload: dict[str, Any]) -> None:
        _roundtrip(fmt, payload)

    prop()


def _call(cid: str | None, name: str, arguments: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {"id": cid, **call} if cid is not None else call


# Our own samples of each first format, with the failure modes of issue #10.
OWN: dict[str, list[dict[str, Any]]] = {
    "openai": [copy.deepcopy(OPENAI), {
        "format": "openai", "source": "airline", "external_id": "odd", "messages": [
            {"role": "user", "content": "Change my flight."},
            {"role": "assistant", "reasoning_content": "Two lookups.", "content": "", "tool_calls": [
                _call("call_a", "get_reservation", ODD),
                _call("call_b", "search", '{"origin":"JFK","destination":"LHR","date":"2024-05-01"}')]},
            {"role": "tool", "tool_call_id": "call_b", "content": "[]"},
            {"role": "tool", "tool_call_id": "call_a", "content": "cat: \x00\x00ELF"},
            {"role": "assistant", "content": "Booking.", "tool_calls": [
                _call("call_c", "book", {"seat": "2A", "flight": "LX17"}), _call(None, "note", "not json {")]},
            {"role": "tool", "tool_call_id": "call_c", "content": "ok"},
            {"role": "assistant", "content": None, "function_call": {"name": "done", "arguments": "{}"}},
            {"role": "function", "name": "done", "content": "bye"},
            {"role": "assistant", "content": "Done."}]}],
    "sharegpt": [{"format": "sharegpt", "source": "glaive", "external_id": "fc", "system": "Use tools.",
                  "tools": '[{"name": "convert", "parameters": {"type": "object"}}]', "conversations": [
                      {"from": "human", "value": "Convert 5 USD."},
                      {"from": "function_call",
                       "value": '{"name": "convert", "arguments": {"to": "JPY", "amount": 5}}'},
                      {"from": "observation", "value": "750 JPY"},
                      {"from": "function_call", "value": PARALLEL, "loss": False},
                      {"from": "observation", "value": "1"}, {"from": "observation", "value": "2"},
                      {"from": "gpt", "value": "750 JPY.", "loss": True}]}],
    "react": [copy.deepcopy(REACT)],
    "smolagents": [{"format": "smolagents", "source": "smol", "external_id": "s1", "messages": [
        {"role": "user", "content": "New task:\nAdd 2 and 2."},
        {"role": "assistant", "content": "Thought: easy.\nCode:\n```py\nfinal_answer(2 + 2)\n```<end_code>"},
        {"role": "tool-call", "content": "Calling tools:\n[{'id': 'call_1', 'type': 'function', 'function': "
                                         "{'name': 'python_interpreter', 'arguments': {'z': 1, 'a': 2}}}]"},
        {"role": "tool-response", "content": "Call id: call_1\nObservation:\n4"}]}],
}


def samples(fmt: str) -> list[dict[str, Any]]:
    """Our samples of `fmt` and the `request` of every real-log gold file posted in that format."""
    out = copy.deepcopy(OWN.get(fmt, []))
    for path in sorted(LOGS.glob("*/*.json")):
        request = json.loads(path.read_text())["request"]
        if request.get("format") == fmt:
            out.append(request)
    return out


def _post(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 201, r.text[:800]
    return dict(r.json())


def _spans(client: Any, tid: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/trajectories/{tid}").json()["spans"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_api_export_reingests_to_the_same_content_and_spans(client, fmt: str) -> None:
    bodies = samples(fmt)
    assert bodies, f"no sample of {fmt!r}: add one under tests/data/logs/<family>/ (request.format = {fmt!r})"
    for k, body in enumerate(bodies):
        first = _post(client, {**body, "source": f"rt-{fmt}", "external_id": f"first-{k}"})
        exported = client.get(f"/v1/trajectories/{first['id']}/export")
        assert exported.status_code == 200, exported.text[:500]
        again_body = {**exported.json(), "source": f"rt-{fmt}-again"}
        again = _post(client, again_body)  # never 422 (e.g. unknown_tool_call_id)
        assert again["content_sha256"] == first["content_sha256"], (fmt, k, again_body)
        assert _spans(client, again["id"]) == _spans(client, first["id"]), (fmt, k)
        assert again["sanitized"] == 0


def test_openai_export_keeps_arguments_exactly_and_sharegpt_keeps_function_calls(client) -> None:
    tid = _post(client, {**OWN["openai"][1], "source": "exact"})["id"]
    messages = client.get(f"/v1/trajectories/{tid}/export").json()["messages"]
    assert [c["function"]["arguments"] for c in messages[1]["tool_calls"]] == [
        ODD, '{"origin":"JFK","destination":"LHR","date":"2024-05-01"}']
    assert [c["function"]["arguments"] for c in messages[4]["tool_calls"]] == [
        {"seat": "2A", "flight": "LX17"}, "not json {"]  # an object stays an object, keys in order
    assert list(messages[4]["tool_calls"][0]["function"]["arguments"]) == ["seat", "flight"]
    assert messages[6]["tool_calls"][0]["function"]["name"] == "done"
    sid = _post(client, {**OWN["sharegpt"][0], "source": "exact"})["id"]
    turns = client.get(f"/v1/trajectories/{sid}/export").json()["conversations"]
    assert [t["from"] for t in turns] == ["human", "function_call", "observation", "function_call", "observation",
                                          "observation", "gpt"]
    assert turns[1]["value"] == '{"name": "convert", "arguments": {"to": "JPY", "amount": 5}}'
    assert turns[3] == {"from": "function_call", "value": PARALLEL, "loss": False}


def test_rows_stored_before_calls_at_still_export_their_calls(app, client) -> None:
    body = {**OWN["openai"][1], "source": "legacy"}
    first = _post(client, body)
    sql(app, """UPDATE trajectories SET messages = (
                  SELECT jsonb_agg(CASE WHEN m ? 'tool_calls' THEN (m - 'calls_at') || jsonb_build_object(
                      'tool_calls', (SELECT jsonb_agg(c - 'raw_arguments')
                                     FROM jsonb_array_elements(m->'tool_calls') c))
                    ELSE m END ORDER BY i)
                  FROM jsonb_array_elements(messages) WITH ORDINALITY AS x(m, i)) WHERE id = :id""", id=first["id"])
    stored = client.get(f"/v1/trajectories/{first['id']}").json()["messages"]
    assert "calls_at" not in stored[1] and "raw_arguments" not in stored[1]["tool_calls"][0]
    exported = client.get(f"/v1/trajectories/{first['id']}/export").json()
    arguments = exported["messages"][1]["tool_calls"][0]["function"]["arguments"]  # read back from the text
    assert json.dumps(arguments) == json.dumps(json.loads(ODD))  # key order as received, not jsonb's
    again = _post(client, {**exported, "source": "legacy-again"})
    assert [m["text"] for m in client.get(f"/v1/trajectories/{again['id']}").json()["messages"]] == [
        m["text"] for m in stored]
    assert _spans(client, again["id"]) == _spans(client, first["id"])
