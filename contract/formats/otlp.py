"""OpenTelemetry GenAI format: `messages` in the shape of the GenAI semantic conventions'
`gen_ai.input.messages` / `gen_ai.output.messages` (`{role, parts}`), as `POST /v1/traces` assembles
them from a trace (`contract.formats.otlp_spans`), plus `export_trace`, which writes canonical
messages back as an OTLP/JSON `ExportTraceServiceRequest` that `POST /v1/traces` reads back to the
same messages.

Canonical rules (`messages[i]` = {role, parts: [...], name?}; unknown keys are ignored):
- roles system|developer (→ system), user, assistant, tool. Parts: `text` {content},
  `reasoning` {content}, `tool_call` {id?, name, arguments?}, `tool_call_response` {id?, response};
  other part types (media, files) are refused.
- system/user text = the `text` parts joined with "\\n". A `tool_call_response` part (in a tool or a
  user message) becomes its own tool message; text parts of a tool message make one tool message.
- assistant text = ("<think>\\n" + the reasoning parts joined with "\\n" + "\\n</think>\\n" when
  non-empty) + the text parts joined with "\\n" + ("\\n" when there is text and there are calls) +
  the Hermes blocks of the tool calls joined by "\\n" (as `openai`). `arguments` is parsed when it
  is a JSON string (kept as received in `raw_arguments`), an object as is, absent → {}.
- tool messages: text = `response` (a string as is, anything else as JSON), sanitized (never
  trained: NUL and lone surrogates → U+FFFD, counted); `id` → `tool_call_id`, which must answer a
  call of an earlier assistant message; the message's `name` is kept.
- auto spans as `openai`: reasoning → reason, free text → reason (action when final), each tool
  call → action, tool → observation.
Export writes one message per canonical message: reasoning and text parts split back out of the
text, calls read back from their blocks (`base.split_calls`), `tools` as given.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from contract.formats.base import (
    ParsedTrajectory,
    fail,
    json_type,
    observation_text,
    opt_str,
    parse_arguments,
    parse_tools,
    render_calls,
    req_dict,
    req_list,
    req_role,
    req_str,
    split_calls,
)
from contract.formats.segment import auto_spans, hermes_assistant_spans
from contract.spans import Message, Role, ToolCall

_ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                           "tool": "tool"}
_THINK_OPEN, _THINK_CLOSE = "<think>\n", "\n</think>\n"
_HEX32 = re.compile(r"[0-9a-f]{32}")
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _call(part: dict[str, Any], field: str) -> ToolCall:
    name = req_str(part.get("name"), f"{field}.name")
    if not name:
        fail(f"{field}.name", "invalid_tool_call", "must not be empty")
    given = part.get("arguments")
    call: ToolCall = {"id": opt_str(part.get("id"), f"{field}.id"), "name": name,
                      "arguments": {} if given is None else parse_arguments(given, f"{field}.arguments")}
    if isinstance(given, str):
        call["raw_arguments"] = given
    return call


def _response_text(part: dict[str, Any], field: str) -> tuple[str, int]:
    value = part.get("response")
    if value is None or isinstance(value, str):
        return observation_text("" if value is None else value, f"{field}.response")
    try:
        return observation_text(_ENCODER.encode(value), f"{field}.response")
    except (TypeError, ValueError, RecursionError):
        fail(f"{field}.response", "invalid_value", "cannot be written as JSON")


def _parts(m: dict[str, Any], f: str) -> list[tuple[str, dict[str, Any], str]]:
    """(type, part, field) of each part; `parts` may be absent (no content captured)."""
    raw = m.get("parts")
    if raw is None:
        return []
    if not isinstance(raw, list):
        fail(f"{f}.parts", "invalid_type", f"must be an array of parts, got {json_type(raw)}")
    out = []
    for k, part in enumerate(raw):
        pf = f"{f}.parts[{k}]"
        req_dict(part, pf)
        kind = part.get("type")
        if kind not in ("text", "reasoning", "tool_call", "tool_call_response"):
            fail(f"{pf}.type", "unsupported_content",
                 f"must be text, reasoning, tool_call or tool_call_response, got {kind!r}")
        out.append((kind, part, pf))
    return out


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    raw_messages = req_list(payload.get("messages"), "messages")
    tools = parse_tools(payload.get("tools"), "tools")
    messages: list[Message] = []
    block_lens: list[list[int]] = []
    call_ids: set[str] = set()
    sanitized = 0

    def tool_message(text: str, call_id: str | None, name: str | None, field: str) -> None:
        msg: Message = {"role": "tool", "text": text}
        if call_id is not None:
            if call_id not in call_ids:
                fail(field, "unknown_tool_call_id", f"{call_id!r} matches no tool call of an earlier assistant message")
            msg["tool_call_id"] = call_id
        if name is not None:
            msg["name"] = name
        messages.append(msg)
        block_lens.append([])

    for i, m in enumerate(raw_messages):
        f = f"messages[{i}]"
        req_dict(m, f)
        role = _ROLES[req_role(m.get("role"), _ROLES, f"{f}.role")]
        parts = _parts(m, f)
        name = opt_str(m.get("name"), f"{f}.name")
        if role == "assistant":
            reasoning = [req_str(p.get("content"), f"{pf}.content") for t, p, pf in parts if t == "reasoning"]
            said = [req_str(p.get("content"), f"{pf}.content") for t, p, pf in parts if t == "text"]
            calls = [_call(p, pf) for t, p, pf in parts if t == "tool_call"]
            if any(t == "tool_call_response" for t, _, _ in parts):
                fail(f"{f}.parts", "unsupported_content", "an assistant message cannot hold a tool_call_response")
            think, content = "\n".join(reasoning), "\n".join(said)
            text = (_THINK_OPEN + think + _THINK_CLOSE if think else "") + content
            msg: Message = {"role": "assistant", "text": text}
            lens: list[int] = []
            if calls:
                blocks, lens = render_calls(calls, f"{f}.parts")
                text += "\n" if content else ""
                msg["text"], msg["tool_calls"], msg["calls_at"] = text + blocks, calls, len(text)
                call_ids.update(c["id"] for c in calls if c["id"] is not None)
            messages.append(msg)
            block_lens.append(lens)
            continue
        if any(t in ("reasoning", "tool_call") for t, _, _ in parts):
            fail(f"{f}.parts", "unsupported_content", f"a {role} message holds only text and tool_call_response parts")
        texts = []
        for t, p, pf in parts:
            if t == "text":
                if role == "tool":
                    text, n = observation_text(p.get("content"), f"{pf}.content")
                    sanitized += n
                    texts.append(text)
                else:
                    texts.append(req_str(p.get("content"), f"{pf}.content"))
                continue
            if texts and role != "tool":  # text before a tool result stays before it
                messages.append({"role": role, "text": "\n".join(texts)})
                block_lens.append([])
                texts = []
            text, n = _response_text(p, pf)
            sanitized += n
            tool_message(text, opt_str(p.get("id"), f"{pf}.id"), name if role == "tool" else None, f"{pf}.id")
        if texts or not parts:
            if role == "tool":
                tool_message("\n".join(texts), None, name, f"{f}.parts")
            else:
                messages.append({"role": role, "text": "\n".join(texts)})
                block_lens.append([])
    spans = auto_spans(messages, lambda i, text, final: hermes_assistant_spans(text, block_lens[i], final))
    return ParsedTrajectory(messages=messages, spans=spans, tools=tools, sanitized=sanitized)


def _assistant_parts(msg: Message) -> list[dict[str, Any]]:
    free, calls = split_calls(msg)
    if msg.get("tool_calls") and not calls:
        free = msg["text"]  # calls kept as structure only (smolagents): the text alone
    parts: list[dict[str, Any]] = []
    end = free.find(_THINK_CLOSE, len(_THINK_OPEN)) if free.startswith(_THINK_OPEN) else -1
    if end > len(_THINK_OPEN):
        parts.append({"type": "reasoning", "content": free[len(_THINK_OPEN):end]})
        free = free[end + len(_THINK_CLOSE):]
    if free or not calls:
        parts.append({"type": "text", "content": free})
    for c in calls:
        part: dict[str, Any] = {"type": "tool_call", "id": c["id"], "name": c["name"]}
        raw, value = c.get("raw_arguments"), c["arguments"]
        part["arguments"] = raw if raw is not None else value if isinstance(value, dict) else json.dumps(value)
        parts.append(part)
    return parts


def export_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Canonical messages as GenAI `{role, parts}` messages (`parse` reads them back to the same)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        role, text = msg["role"], msg["text"]
        item: dict[str, Any] = {"role": role}
        if role == "assistant":
            item["parts"] = _assistant_parts(msg)
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            item["parts"] = [{"type": "tool_call_response", "id": call_id, "response": text} if call_id is not None
                             else {"type": "text", "content": text}]
            if "name" in msg:
                item["name"] = msg["name"]
        else:
            item["parts"] = [{"type": "text", "content": text}]
        out.append(item)
    return out


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = {"messages": export_messages(messages)}
    if tools is not None:
        result["tools"] = tools
    return result


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, list):
        return {"key": key, "value": {"arrayValue": {"values": [{"stringValue": v} for v in value]}}}
    return {"key": key, "value": {"stringValue": value}}


def trace_id_for(external_id: str | None, messages: Sequence[Message]) -> str:
    """The OTLP trace id of an exported trajectory: its external_id when that is one, else a digest."""
    if external_id is not None and _HEX32.fullmatch(external_id) and external_id != "0" * 32:
        return external_id
    seed = external_id if external_id is not None else _ENCODER.encode([m["text"] for m in messages])
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def export_trace(messages: Sequence[Message], tools: list[Any] | None, *, source: str,
                 external_id: str | None = None, teacher_model: str | None = None, task: str | None = None,
                 task_type: str | None = None, outcome: str | None = None, reward: float | None = None,
                 tags: Sequence[str] = ()) -> dict[str, Any]:
    """An OTLP/JSON `ExportTraceServiceRequest` holding one `chat` span: the trailing assistant messages
    are `gen_ai.output.messages`, the rest `gen_ai.input.messages` (system messages stay in place), and
    the envelope goes in `distillery.*` attributes, so `POST /v1/traces` gives back the same trajectory."""
    exported = export_messages(messages)
    split = len(exported)
    while split > 0 and exported[split - 1]["role"] == "assistant":
        split -= 1
    trace_id = trace_id_for(external_id, messages)
    attrs = [_attr("gen_ai.operation.name", "chat")]
    if teacher_model is not None:
        attrs.append(_attr("gen_ai.request.model", teacher_model))
    attrs.append(_attr("gen_ai.input.messages", _ENCODER.encode(exported[:split])))
    attrs.append(_attr("gen_ai.output.messages", _ENCODER.encode(exported[split:])))
    if tools is not None:
        attrs.append(_attr("gen_ai.tool.definitions", _ENCODER.encode(tools)))
    envelope = {"distillery.external_id": external_id if external_id != trace_id else None, "distillery.task": task,
                "distillery.task_type": task_type, "distillery.outcome": outcome, "distillery.reward": reward,
                "distillery.tags": list(tags) or None}
    attrs.extend(_attr(k, v) for k, v in envelope.items() if v is not None)
    span = {"traceId": trace_id, "spanId": trace_id[:16], "name": f"chat {teacher_model or ''}".rstrip(),
            "kind": 3, "startTimeUnixNano": "0", "endTimeUnixNano": "0", "attributes": attrs}
    return {"resourceSpans": [{
        "resource": {"attributes": [_attr("service.name", source)]},
        "scopeSpans": [{"scope": {"name": "distillery"}, "spans": [span]}],
    }]}
