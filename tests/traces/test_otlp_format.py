"""The `otlp` format and the trace assembly, as pure functions: each GenAI convention, the conversation
built without duplicated turns, tool results from tool spans, the envelope, and the round trip."""

from __future__ import annotations

import copy
import json
import random

import pytest

from contract.formats import FormatError, canonical_sha256, export, parse
from contract.formats.otlp import export_trace
from contract.formats.otlp_spans import group_traces, read_request, trace_request
from tests.traces.otlp_builders import (
    ANSWER,
    CALL,
    RESULT,
    ROOT,
    TRACE,
    USER,
    agent_run,
    msgs,
    request,
    span,
    text,
)


def _item(spans: list[dict], **kw: object) -> dict:
    return trace_request(read_request(request(spans, **kw)))  # type: ignore[arg-type]


def _canonical(item: dict) -> list[dict]:
    return parse("otlp", {k: item[k] for k in ("messages", "tools") if k in item}).messages


def test_attribute_shape_assembles_one_conversation_without_repeats():
    item = _item(agent_run())
    roles = [m["role"] for m in item["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]  # the second call's context is not repeated
    assert item["messages"][2]["parts"][0]["type"] == "reasoning"  # the output's copy (with reasoning) is kept
    assert item["source"] == "weather-agent" and item["external_id"] == TRACE
    assert item["teacher_model"] == "gpt-4o-2024-08-06" and item["task"] == "Weather in Paris?"
    assert item["outcome"] == "success" and item["tags"] == ["prod", "weather"]
    assert item["metadata"]["otlp"] == {"trace_id": TRACE, "spans": 4, "llm_spans": 2, "threads": 1,
                                        "complete": True}
    messages = _canonical(item)
    assert messages[2]["text"].startswith("<think>\nI should look it up.\n</think>\n<tool_call>\n")
    assert messages[3] == {"role": "tool", "text": "rainy, 12°C", "tool_call_id": "call_1"}


def test_spans_in_any_order_give_the_same_trajectory():
    spans = agent_run()
    assert _item(list(reversed(spans))) == _item(spans)


def test_tool_span_supplies_a_result_no_later_input_repeats():
    spans = [span(TRACE, "b000000000000001", 1, {"gen_ai.input.messages": msgs(USER),
                                                  "gen_ai.output.messages": msgs(CALL)}, parent=ROOT),
             span(TRACE, "b000000000000002", 2, {"gen_ai.operation.name": "execute_tool",
                                                  "gen_ai.tool.call.id": "call_1",
                                                  "gen_ai.tool.call.result": "sunny"}, parent=ROOT)]
    item = _item(spans)
    assert [m["role"] for m in item["messages"]] == ["user", "assistant", "tool"]
    assert item["messages"][2]["parts"][0] == {"type": "tool_call_response", "id": "call_1", "response": "sunny"}
    assert item["metadata"]["otlp"]["complete"] is False  # no root span among them


def test_event_shape():
    events = [
        {"name": "gen_ai.system.message", "attributes": {"content": "Be brief."}},
        {"name": "gen_ai.user.message", "attributes": {"content": "Cancel order A1."}},
        {"name": "gen_ai.choice", "attributes": {"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "tool_calls": [{"id": "c9", "type": "function", "function": {
                "name": "cancel_order", "arguments": '{"order": "A1"}'}}]}}},
    ]
    second = [*events[:2],
              {"name": "gen_ai.assistant.message", "attributes": {"tool_calls": json.dumps([{
                  "id": "c9", "type": "function", "function": {"name": "cancel_order",
                                                               "arguments": '{"order": "A1"}'}}])}},
              {"name": "gen_ai.tool.message", "attributes": {"id": "c9", "content": "cancelled"}},
              {"name": "gen_ai.choice", "attributes": {"message": {"content": "Done."}}}]
    item = _item([span(TRACE, "c000000000000001", 1, {"gen_ai.system": "openai"}, events=events),
                  span(TRACE, "c000000000000002", 2, {"gen_ai.system": "openai"}, events=second)])
    messages = _canonical(item)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[2]["tool_calls"][0]["raw_arguments"] == '{"order": "A1"}'
    assert messages[3]["tool_call_id"] == "c9" and messages[4]["text"] == "Done."


def test_openinference_shape():
    def oi(prefix: str, i: int, **fields: object) -> dict[str, object]:
        return {f"llm.{prefix}_messages.{i}.message.{k.replace('__', '.')}": v for k, v in fields.items()}

    first = {"openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4",
             **oi("input", 0, role="user", content="Find a flight to Rome."),
             **oi("output", 0, role="assistant", content="Searching.",
                  **{"tool_calls.0.tool_call.id": "t1", "tool_calls.0.tool_call.function.name": "search",
                     "tool_calls.0.tool_call.function.arguments": '{"to": "FCO"}'}),
             "llm.tools.0.tool.json_schema": json.dumps({"type": "function", "function": {"name": "search"}})}
    second = {"openinference.span.kind": "LLM", "llm.model_name": "claude-sonnet-4",
              **oi("input", 0, role="user", content="Find a flight to Rome."),
              **oi("input", 1, role="assistant", content="Searching.",
                   **{"tool_calls.0.tool_call.id": "t1", "tool_calls.0.tool_call.function.name": "search",
                      "tool_calls.0.tool_call.function.arguments": '{"to": "FCO"}'}),
              **oi("input", 2, role="tool", content="AZ 611 at 9:40", tool_call_id="t1"),
              **oi("output", 0, role="assistant", content="Take AZ 611."),
              "llm.tools.0.tool.json_schema": first["llm.tools.0.tool.json_schema"]}
    item = _item([span(TRACE, "d000000000000001", 1, first), span(TRACE, "d000000000000002", 2, second)])
    messages = _canonical(item)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["text"] == ('Searching.\n<tool_call>\n{"name": "search", "arguments": {"to": "FCO"}}'
                                   "\n</tool_call>")
    assert item["teacher_model"] == "claude-sonnet-4"
    assert item["tools"] == [{"type": "function", "function": {"name": "search"}}]  # from the last LLM span


def test_openllmetry_shape():
    attrs = {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
             "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "2+2?",
             "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "4"}
    messages = _canonical(_item([span(TRACE, "e000000000000001", 1, attrs)]))
    assert messages == [{"role": "user", "text": "2+2?"}, {"role": "assistant", "text": "4"}]


def test_vercel_ai_sdk_shape():
    first = {"ai.operationId": "ai.generateText.doGenerate", "ai.response.model": "gpt-4o",
             "ai.prompt.messages": json.dumps([{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}]),
             "ai.response.reasoning": "Need the tool.", "ai.response.text": "",
             "ai.response.toolCalls": json.dumps([{"type": "tool-call", "toolCallId": "v1", "toolName": "weather",
                                                   "input": {"city": "Oslo"}}])}
    second = {"ai.operationId": "ai.generateText.doGenerate", "ai.prompt.messages": json.dumps([
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": [{"type": "tool-call", "toolCallId": "v1", "toolName": "weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "tool", "content": [{"type": "tool-result", "toolCallId": "v1", "toolName": "weather",
                                      "output": {"type": "json", "value": {"temp": -3}}}]}]),
        "ai.response.text": "Cold: -3."}
    item = _item([span(TRACE, "f000000000000001", 1, first), span(TRACE, "f000000000000002", 2, second)])
    messages = _canonical(item)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["text"].startswith("<think>\nNeed the tool.\n</think>\n<tool_call>")
    assert messages[2] == {"role": "tool", "text": '{"temp": -3}', "tool_call_id": "v1"}
    assert messages[3]["text"] == "Cold: -3."


def test_a_diverging_call_starts_another_thread_and_the_longest_wins():
    side = span(TRACE, "f000000000000009", 150, {"gen_ai.input.messages": msgs(text("user", "Title this chat")),
                                                   "gen_ai.output.messages": msgs(text("assistant", "Weather"))})
    item = _item([*agent_run(), side])
    assert item["metadata"]["otlp"]["threads"] == 2
    assert [m["role"] for m in item["messages"]] == ["system", "user", "assistant", "tool", "assistant"]


def test_trace_without_genai_messages_is_refused_with_a_reason():
    with pytest.raises(FormatError) as err:
        _item([span(TRACE, "a000000000000001", 1, {"http.method": "GET"})])
    assert err.value.errors[0]["code"] == "no_genai_messages"


@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ({"resourceSpans": {}}, "resourceSpans"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "spanId": "a" * 16}]}]}]},
     "resourceSpans[0].scopeSpans[0].spans[0].traceId"),
    ({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "a" * 32, "spanId": "a" * 16,
                                                    "attributes": [{"key": "k", "value": {"intValue": "x"}}]}]}]}]},
     "resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value"),
])
def test_malformed_requests_name_the_field(body, field):
    with pytest.raises(FormatError) as err:
        read_request(body)
    assert err.value.errors[0]["field"] == field


def test_canonical_rules_and_errors():
    parsed = parse("otlp", {"messages": [
        {"role": "developer", "parts": [{"type": "text", "content": "sys"}]},
        {"role": "user", "parts": [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "x", "name": "f"}]},
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "x", "response": {"ok": True}},
                                   {"type": "text", "content": "go on"}]},
        {"role": "tool", "parts": [{"type": "text", "content": "bad\x00byte"}]},
    ]})
    assert [m["role"] for m in parsed.messages] == ["system", "user", "assistant", "tool", "user", "tool"]
    assert parsed.messages[1]["text"] == "a\nb"
    assert parsed.messages[2]["tool_calls"] == [{"id": "x", "name": "f", "arguments": {}}]
    assert parsed.messages[3] == {"role": "tool", "text": '{"ok": true}', "tool_call_id": "x"}
    assert parsed.messages[5]["text"] == "bad\ufffdbyte" and parsed.sanitized == 1
    for bad, code in [
        ({"role": "tool", "parts": [{"type": "tool_call_response", "id": "nope", "response": "r"}]},
         "unknown_tool_call_id"),
        ({"role": "user", "parts": [{"type": "image", "uri": "x"}]}, "unsupported_content"),
        ({"role": "assistant", "parts": [{"type": "text", "content": "a\x00"}]}, "invalid_character"),
        ({"role": "robot", "parts": []}, "unknown_role"),
    ]:
        with pytest.raises(FormatError) as err:
            parse("otlp", {"messages": [bad]})
        assert err.value.errors[0]["code"] == code


def test_export_round_trips_through_both_paths():
    item = _item(agent_run())
    first = parse("otlp", {"messages": item["messages"]})
    again = parse("otlp", export("otlp", first.messages, None))
    assert canonical_sha256(again.messages) == canonical_sha256(first.messages) and again.spans == first.spans
    trace = export_trace(first.messages, None, source="copy", external_id="run 7", teacher_model="gpt-4o",
                         outcome="success", tags=["a"])
    back = trace_request(read_request(json.loads(json.dumps(trace))))
    assert back["external_id"] == "run 7" and back["outcome"] == "success" and back["tags"] == ["a"]
    assert back["source"] == "copy" and back["teacher_model"] == "gpt-4o"
    reparsed = parse("otlp", {"messages": back["messages"]})
    assert canonical_sha256(reparsed.messages) == canonical_sha256(first.messages)
    assert reparsed.spans == first.spans


def test_export_keeps_raw_argument_strings_and_odd_texts():
    messages = parse("otlp", {"messages": [
        USER, {"role": "assistant", "parts": [{"type": "text", "content": "<think>\nnot reasoning"},
                                              {"type": "tool_call", "id": "c", "name": "f",
                                               "arguments": '{"b": 1,  "a": 2}'}]},
        RESULT | {"parts": [{"type": "tool_call_response", "id": "c", "response": "r"}]}, ANSWER]}).messages
    exported = export("otlp", messages, None)
    assert exported["messages"][1]["parts"][1]["arguments"] == '{"b": 1,  "a": 2}'
    assert canonical_sha256(parse("otlp", exported).messages) == canonical_sha256(messages)


_ODD = [None, 1, 2**70, 1.5, "", "[", "[1,2]", '[{"role": 5}]', '[{"role":"user","parts":[1]}]',
        '[{"role":"assistant","parts":[{"type":"tool_call","name":5}]}]', [], {}, [1, {"a": None}], True,
        {"stringValue": 3}, {"arrayValue": None}, {"kvlistValue": {"values": [1]}}, {"intValue": None},
        '[{"role":"tool","parts":[{"type":"tool_call_response","id":5,"response":{"x":[1]}}]}]']


def _mutate(obj: object, rng: random.Random) -> None:
    if isinstance(obj, dict) and obj:
        if rng.random() < 0.3:
            obj[rng.choice(list(obj))] = copy.deepcopy(rng.choice(_ODD))
        else:
            _mutate(rng.choice(list(obj.values())), rng)
    elif isinstance(obj, list) and obj:
        if rng.random() < 0.2:
            obj[rng.randrange(len(obj))] = copy.deepcopy(rng.choice(_ODD))
        else:
            _mutate(rng.choice(obj), rng)


def test_damaged_requests_fail_only_with_format_errors():
    """Whatever an exporter sends, reading and assembling it ends in a request or a FormatError (never a
    crash, which the API would answer with a 5xx)."""
    rng = random.Random(7)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(1500):
        body = request(agent_run())
        for _ in range(rng.randint(1, 4)):
            _mutate(body, rng)
        try:
            for spans in group_traces(read_request(body)).values():
                item = trace_request(spans)
                parse("otlp", {k: item[k] for k in ("messages", "tools") if k in item})
            outcomes["ok"] += 1
        except FormatError:
            outcomes["refused"] += 1
    assert outcomes["ok"] > 100 and outcomes["refused"] > 100  # both paths were exercised
