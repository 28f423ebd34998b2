"""OTLP traces → trajectory requests: read an `ExportTraceServiceRequest` in its JSON encoding (hex ids,
camelCase keys, AnyValue wrappers), group the spans by trace, and assemble each trace into one
`POST /v1/trajectories` request of format `otlp` (`contract.formats.otlp`).

Assembly (one trace → one trajectory):
- the LLM spans (those carrying messages, `otlp_messages.span_messages`) are taken in start-time
  order; each one's messages are its context (system instructions + input) followed by its output;
- every LLM call repeats the earlier context, so the conversation grows by the longest consistent
  prefix: a span whose messages start with a thread's messages extends that thread; one whose
  messages are already inside a thread adds nothing (a richer copy, one with reasoning parts, replaces
  the plain one); any other span starts a new thread. Messages compare by role, text, calls
  (arguments compared as JSON values) and tool results, ignoring reasoning (inputs often drop it).
  The trajectory is the longest thread (the first on ties); the others are counted in metadata;
- a tool call that no message answers takes its result from a tool-execution span
  (`gen_ai.operation.name = execute_tool`, an OpenInference TOOL span, a Vercel `ai.toolCall`) with the
  same call id and a recorded result (`gen_ai.tool.call.result` / `output.value` /
  `ai.toolCall.result`), placed after the call's message.
Envelope: `source` = attribute `distillery.source`, else the resource's `service.name`, else "otlp";
`external_id` = `distillery.external_id`, else the trace id; `teacher_model` = the last LLM span's
`gen_ai.response.model` / `gen_ai.request.model` / `llm.model_name`; `task` = `distillery.task`,
else the first user message's text; `task_type`, `outcome`, `reward`, `tags` from
`distillery.task_type`, `distillery.outcome`, `distillery.reward`, `distillery.tags` (array or
comma-separated string); tools from `gen_ai.tool.definitions`, OpenInference `llm.tools.*` or
Vercel's `ai.prompt.tools`.
A `distillery.*` attribute is looked up on the root span, then the other spans, then the resource.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from contract.formats.base import fail, json_type
from contract.formats.jsonvalue import try_json
from contract.formats.otlp_messages import GenAIMessage, is_tool_span, span_messages, tool_result

_HEX = re.compile(r"[0-9a-fA-F]*")
_MAX_TASK_CHARS = 100_000  # TrajectoryCreate.task's limit: a longer first message leaves `task` empty


@dataclass
class OtlpSpan:
    """One span, decoded, with what it needs to be written back (`encode_spans`)."""

    trace_id: str
    span_id: str
    parent_id: str
    start: int
    end: int
    attrs: dict[str, Any]
    events: list[dict[str, Any]]
    resource_attrs: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)
    resource: dict[str, Any] = field(repr=False)
    scope: dict[str, Any] = field(repr=False)


def any_value(value: Any, where: str) -> Any:
    """An OTLP AnyValue ({stringValue}, {intValue}, {arrayValue: {values}}, {kvlistValue: {values}}, …)."""
    if not isinstance(value, dict) or not value:
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        raw = value["intValue"]
        try:
            return int(raw)
        except (TypeError, ValueError):
            fail(where, "invalid_value", f"intValue must be an integer, got {raw!r}")
    if "doubleValue" in value:
        return value["doubleValue"]
    if "arrayValue" in value:
        items = (value["arrayValue"] or {}).get("values") or []
        return [any_value(v, f"{where}[{k}]") for k, v in enumerate(items)]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values") or [], where)
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes(items: Any, where: str) -> dict[str, Any]:
    """A KeyValue list as a dict (a later key wins)."""
    if items is None:
        return {}
    if not isinstance(items, list):
        fail(where, "invalid_type", f"must be an array of {{key, value}}, got {json_type(items)}")
    out: dict[str, Any] = {}
    for k, kv in enumerate(items):
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            fail(f"{where}[{k}]", "invalid_type", "must be an object {key, value} with a string key")
        out[kv["key"]] = any_value(kv.get("value"), f"{where}[{k}].value")
    return out


def _id(value: Any, size: int, where: str, *, required: bool) -> str:
    if value in (None, "") and not required:
        return ""
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        fail(where, "invalid_id", f"must be {2 * size} hex digits, got {value!r}")
    return value.lower()


def _nanos(value: Any, where: str) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        fail(where, "invalid_value", f"must be an integer (nanoseconds), got {value!r}")


def _array(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        fail(where, "invalid_type", f"must be an array, got {json_type(value)}")
    return value


def read_request(body: Any) -> list[OtlpSpan]:
    """The spans of an `ExportTraceServiceRequest` (JSON encoding); FormatError when it is not one."""
    if not isinstance(body, dict):
        fail("body", "invalid_type", f"must be an ExportTraceServiceRequest object, got {json_type(body)}")
    spans: list[OtlpSpan] = []
    for r, rs in enumerate(_array(body.get("resourceSpans"), "resourceSpans")):
        rf = f"resourceSpans[{r}]"
        if not isinstance(rs, dict):
            fail(rf, "invalid_type", "must be an object")
        resource = rs.get("resource") or {}
        if not isinstance(resource, dict):
            fail(f"{rf}.resource", "invalid_type", "must be an object")
        resource_attrs = attributes(resource.get("attributes"), f"{rf}.resource.attributes")
        scopes = rs.get("scopeSpans", rs.get("instrumentationLibrarySpans"))
        for s, ss in enumerate(_array(scopes, f"{rf}.scopeSpans")):
            sf = f"{rf}.scopeSpans[{s}]"
            if not isinstance(ss, dict):
                fail(sf, "invalid_type", "must be an object")
            scope = ss.get("scope") or {}
            for k, sp in enumerate(_array(ss.get("spans"), f"{sf}.spans")):
                f = f"{sf}.spans[{k}]"
                if not isinstance(sp, dict):
                    fail(f, "invalid_type", "must be a span object")
                events = []
                for e, ev in enumerate(_array(sp.get("events"), f"{f}.events")):
                    if not isinstance(ev, dict):
                        fail(f"{f}.events[{e}]", "invalid_type", "must be an event object")
                    events.append({"name": ev.get("name"), "time": _nanos(ev.get("timeUnixNano"), f"{f}.events[{e}]"),
                                   "attributes": attributes(ev.get("attributes"), f"{f}.events[{e}].attributes")})
                spans.append(OtlpSpan(
                    trace_id=_id(sp.get("traceId"), 16, f"{f}.traceId", required=True),
                    span_id=_id(sp.get("spanId"), 8, f"{f}.spanId", required=True),
                    parent_id=_id(sp.get("parentSpanId"), 8, f"{f}.parentSpanId", required=False),
                    start=_nanos(sp.get("startTimeUnixNano"), f"{f}.startTimeUnixNano"),
                    end=_nanos(sp.get("endTimeUnixNano"), f"{f}.endTimeUnixNano"),
                    attrs=attributes(sp.get("attributes"), f"{f}.attributes"), events=events,
                    resource_attrs=resource_attrs, raw=sp, resource=resource, scope=scope))
    return spans


def group_traces(spans: list[OtlpSpan]) -> dict[str, list[OtlpSpan]]:
    """Spans by trace id, in order of first appearance."""
    out: dict[str, list[OtlpSpan]] = {}
    for span in spans:
        out.setdefault(span.trace_id, []).append(span)
    return out


def merge(old: list[OtlpSpan], new: list[OtlpSpan]) -> list[OtlpSpan]:
    """`old` plus `new`; a span sent again (same span id) is taken from `new`."""
    ids = {s.span_id for s in new}
    return [s for s in old if s.span_id not in ids] + new


def encode_spans(spans: list[OtlpSpan]) -> dict[str, Any]:
    """The spans as an `ExportTraceServiceRequest` (JSON encoding), each under its own resource and scope."""
    groups: dict[str, dict[str, Any]] = {}
    for span in spans:
        rkey = json.dumps(span.resource, sort_keys=True)
        rs = groups.setdefault(rkey, {"resource": span.resource, "scopes": {}})
        skey = json.dumps(span.scope, sort_keys=True)
        rs["scopes"].setdefault(skey, {"scope": span.scope, "spans": []})["spans"].append(span.raw)
    return {"resourceSpans": [{"resource": g["resource"], "scopeSpans": list(g["scopes"].values())}
                              for g in groups.values()]}


def _key(m: GenAIMessage) -> Any:
    """What two copies of one message share whatever the instrumentation (reasoning ignored)."""
    def value(v: Any) -> str:
        if isinstance(v, str):
            ok, decoded = try_json(v)
            v = decoded if ok and isinstance(decoded, dict | list) else v
        return json.dumps(v, sort_keys=True, default=str)

    texts, calls, results = [], [], []
    for p in _parts(m):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            texts.append(value(p.get("content")) if not isinstance(p.get("content"), str) else p["content"])
        elif kind == "tool_call":
            calls.append((p.get("id"), p.get("name"), value(p.get("arguments") or {})))
        elif kind == "tool_call_response":
            results.append((p.get("id"), value(p.get("response"))))
        elif kind != "reasoning":
            texts.append(value(p))
    return m.get("role"), "\n".join(texts).strip(), tuple(calls), tuple(results)


def _parts(m: GenAIMessage) -> list[Any]:
    parts = m.get("parts")
    return parts if isinstance(parts, list) else []


def _has_reasoning(m: GenAIMessage) -> bool:
    return any(isinstance(p, dict) and p.get("type") == "reasoning" for p in _parts(m))


@dataclass
class Assembly:
    messages: list[GenAIMessage]
    llm_spans: int
    threads: int
    last_llm: OtlpSpan | None


def assemble(spans: list[OtlpSpan]) -> Assembly:
    """The trace's conversation (see the module docstring)."""
    threads: list[list[GenAIMessage]] = []
    keys: list[list[Any]] = []
    llm = [(s, msgs) for s in sorted(spans, key=lambda s: (s.start, s.end, s.span_id))
           if (msgs := span_messages(s.attrs, s.events))]
    for _, msgs in llm:
        mk = [_key(m) for m in msgs]
        best, best_k = -1, -1
        for t, tk in enumerate(keys):
            k = 0
            while k < min(len(tk), len(mk)) and tk[k] == mk[k]:
                k += 1
            if (k == len(tk) or k == len(mk)) and k > best_k:
                best, best_k = t, k
        if best < 0:
            threads.append(list(msgs))
            keys.append(mk)
            continue
        thread = threads[best]
        for i in range(best_k):
            if _has_reasoning(msgs[i]) and not _has_reasoning(thread[i]):
                thread[i] = msgs[i]
        thread.extend(msgs[len(thread):])
        keys[best].extend(mk[len(keys[best]):])
    main = max(threads, key=len) if threads else []
    _add_tool_results(main, spans)
    return Assembly(messages=main, llm_spans=len(llm), threads=len(threads), last_llm=llm[-1][0] if llm else None)


def _add_tool_results(messages: list[GenAIMessage], spans: list[OtlpSpan]) -> None:
    answered = {p.get("id") for m in messages for p in m.get("parts") or []
                if isinstance(p, dict) and p.get("type") == "tool_call_response"}
    results = dict(r for s in spans if is_tool_span(s.attrs) and (r := tool_result(s.attrs)) is not None)
    i = 0
    while i < len(messages):
        parts = messages[i].get("parts") or []
        missing = [p.get("id") for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"
                   and p.get("id") not in answered and p.get("id") in results]
        i += 1
        if messages[i - 1].get("role") != "assistant" or not missing:
            continue
        while i < len(messages) and messages[i].get("role") == "tool":
            i += 1
        for call_id in missing:
            messages.insert(i, {"role": "tool", "parts": [{"type": "tool_call_response", "id": call_id,
                                                             "response": results[str(call_id)]}]})
            answered.add(call_id)
            i += 1


def _root_first(spans: list[OtlpSpan]) -> list[OtlpSpan]:
    return sorted(spans, key=lambda s: (s.parent_id != "", s.start, s.span_id))


def _lookup(spans: list[OtlpSpan], key: str) -> Any:
    for s in _root_first(spans):
        if s.attrs.get(key) is not None:
            return s.attrs[key]
    for s in spans:
        if s.resource_attrs.get(key) is not None:
            return s.resource_attrs[key]
    return None


def trace_key(spans: list[OtlpSpan]) -> tuple[str, str]:
    """(source, external_id) of a trace: where its trajectory is stored."""
    source = _lookup(spans, "distillery.source")
    if not isinstance(source, str) or not source:
        source = _lookup(spans, "service.name")
    external_id = _lookup(spans, "distillery.external_id")
    return (source if isinstance(source, str) and source else "otlp",
            external_id if isinstance(external_id, str) and external_id else spans[0].trace_id)


def _tags(value: Any) -> Any:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


def _reward(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # the request's validation names it
    return value


def _tools(span: OtlpSpan | None) -> Any:
    if span is None:
        return None
    if "gen_ai.tool.definitions" in span.attrs:
        value = span.attrs["gen_ai.tool.definitions"]
        if isinstance(value, str):
            ok, decoded = try_json(value)
            return decoded if ok else value
        return value
    if isinstance(span.attrs.get("ai.prompt.tools"), list):  # Vercel AI SDK: one JSON string per tool
        indexed = list(enumerate(span.attrs["ai.prompt.tools"]))
    else:
        indexed = sorted((int(m.group(1)), v) for k, v in span.attrs.items()
                         if (m := re.fullmatch(r"llm\.tools\.(\d+)\.tool\.json_schema", k)))
    if not indexed:
        return None
    return [try_json(v)[1] if isinstance(v, str) and try_json(v)[0] else v for _, v in indexed]


def _first_user_text(messages: list[GenAIMessage]) -> str | None:
    for m in messages:
        if m.get("role") == "user":
            texts = [p.get("content") for p in _parts(m) if isinstance(p, dict) and p.get("type") == "text"]
            if texts and all(isinstance(t, str) for t in texts):
                return "\n".join(str(t) for t in texts)
    return None


def trace_request(spans: list[OtlpSpan]) -> dict[str, Any]:
    """The `POST /v1/trajectories` request (format `otlp`) of one trace's spans; FormatError when the
    trace carries no GenAI messages."""
    assembly = assemble(spans)
    if not assembly.messages:
        fail("spans", "no_genai_messages",
             "no span of this trace carries GenAI messages (gen_ai.input.messages / gen_ai.output.messages, "
             "llm.input_messages.*, gen_ai.prompt.*, or gen_ai.*.message events); is message content capture "
             "turned on in the instrumentation (e.g. OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)?")
    source, external_id = trace_key(spans)
    last = assembly.last_llm
    model = None
    if last is not None:
        for key in ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name"):
            if isinstance(last.attrs.get(key), str) and last.attrs[key]:
                model = last.attrs[key]
                break
    task = _lookup(spans, "distillery.task")
    if task is None:
        first = _first_user_text(assembly.messages)
        task = first if first is not None and len(first) <= _MAX_TASK_CHARS else None
    item: dict[str, Any] = {"format": "otlp", "source": source, "external_id": external_id,
                            "teacher_model": model, "task": task}
    for key in ("task_type", "outcome"):
        value = _lookup(spans, f"distillery.{key}")
        if value is not None:
            item[key] = value
    reward, tags = _lookup(spans, "distillery.reward"), _lookup(spans, "distillery.tags")
    if reward is not None:
        item["reward"] = _reward(reward)
    if tags is not None:
        item["tags"] = _tags(tags)
    item["metadata"] = {"otlp": {
        "trace_id": spans[0].trace_id, "spans": len(spans), "llm_spans": assembly.llm_spans,
        "threads": assembly.threads, "complete": any(s.parent_id == "" for s in spans)}}
    item["messages"] = assembly.messages
    tools = _tools(last)
    if tools is not None:
        item["tools"] = tools
    return item

