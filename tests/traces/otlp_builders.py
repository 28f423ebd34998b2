"""Builders for OTLP/JSON test requests: spans in the JSON encoding (hex ids, AnyValue wrappers)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": [{"key": k, "value": value(x)} for k, x in v.items()]}}
    return {"stringValue": v}


def attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": value(v)} for k, v in d.items()]


def span(trace: str, span_id: str, start: int, attributes: dict[str, Any], *, parent: str = "",
         name: str = "chat", events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": trace, "spanId": span_id, "name": name, "kind": 3,
                           "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1),
                           "attributes": attrs(attributes)}
    if parent:
        out["parentSpanId"] = parent
    if events:
        out["events"] = [{"name": e["name"], "timeUnixNano": str(start),
                          "attributes": attrs(e.get("attributes", {}))} for e in events]
    return out


def request(spans: list[dict[str, Any]], service: str = "weather-agent",
            resource: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": attrs({"service.name": service, **(resource or {})})},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]}]}


def msgs(*items: dict[str, Any]) -> str:
    return json.dumps(list(items))


def text(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": content}]}


TRACE = "5b8efff798038103d269b633813fc60c"
ROOT = "eee19b7ec3c1b174"
USER = text("user", "Weather in Paris?")
CALL = {"role": "assistant", "parts": [
    {"type": "reasoning", "content": "I should look it up."},
    {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]}
RESULT = {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 12°C"}]}
ANSWER = text("assistant", "It is rainy and 12°C in Paris.")


def agent_run(trace: str = TRACE) -> list[dict[str, Any]]:
    """A two-call agent run in the newer attribute shape: root agent span, two chat spans, one tool span."""
    model = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
             "gen_ai.response.model": "gpt-4o-2024-08-06",
             "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "You are a weather bot."}])}
    plain_call = {"role": "assistant", "parts": [CALL["parts"][1]]}  # the next input drops the reasoning
    return [
        span(trace, "a000000000000001", 100, {**model, "gen_ai.input.messages": msgs(USER),
                                              "gen_ai.output.messages": msgs(CALL)}, parent=ROOT),
        span(trace, "a000000000000002", 200, {"gen_ai.operation.name": "execute_tool",
                                              "gen_ai.tool.name": "get_weather", "gen_ai.tool.call.id": "call_1",
                                              "gen_ai.tool.call.result": "rainy, 12°C"},
             parent=ROOT, name="execute_tool get_weather"),
        span(trace, "a000000000000003", 300, {**model, "gen_ai.input.messages": msgs(USER, plain_call, RESULT),
                                              "gen_ai.output.messages": msgs(ANSWER)}, parent=ROOT),
        span(trace, ROOT, 50, {"gen_ai.operation.name": "invoke_agent", "distillery.outcome": "success",
                               "distillery.tags": ["prod", "weather"]}, name="invoke_agent weather"),
    ]


def to_protobuf(body: dict[str, Any]) -> bytes:
    """An OTLP/JSON request as protobuf bytes (ids: hex → bytes; the proto JSON mapping spells bytes in base64)."""
    body = copy.deepcopy(body)
    for rs in body["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if sp.get(key):
                        sp[key] = base64.b64encode(bytes.fromhex(sp[key])).decode()
    return json_format.ParseDict(body, ExportTraceServiceRequest()).SerializeToString()
