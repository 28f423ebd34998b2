"""The messages of one OTLP span, read from whichever GenAI convention its instrumentation follows,
as GenAI `{role, parts}` messages (the shape `contract.formats.otlp` parses).

Conventions read, first match wins per span:
1. OpenTelemetry GenAI attributes (semconv ≥ 1.37): `gen_ai.system_instructions`,
   `gen_ai.input.messages`, `gen_ai.output.messages` (JSON strings, or the same as structured
   AnyValues); a message without `parts` is read as an OpenAI chat message.
2. OpenInference flattened attributes: `llm.input_messages.{i}.message.{role, content, contents.{j}.
   message_content.{type,text}, tool_calls.{k}.tool_call.{id, function.name, function.arguments},
   tool_call_id, name, reasoning_content}` and `llm.output_messages.*`.
3. OpenLLMetry / Traceloop flattened attributes: `gen_ai.prompt.{i}.{role, content, tool_call_id,
   tool_calls.{k}.{id, name, arguments}}` and `gen_ai.completion.{i}.*`.
4. Vercel AI SDK `ai.*.doGenerate` spans: `ai.prompt.messages` (AI SDK messages: `text`,
   `reasoning`, `tool-call`, `tool-result` parts), `ai.response.text`, `ai.response.reasoning`,
   `ai.response.toolCalls`.
5. The older event-based shape (semconv 1.27–1.36): span events `gen_ai.system.message`,
   `gen_ai.user.message`, `gen_ai.assistant.message` (`content`, `tool_calls`), `gen_ai.tool.message`
   (`content`, `id`) and `gen_ai.choice` (`message`); the body in the event's attributes (as
   attributes or as a JSON string in `gen_ai.event.content`).
OpenAI-shaped messages map as: `content` (string or text parts) → `text`; `reasoning_content` /
`reasoning` → `reasoning`; `tool_calls` (OpenAI or flat `{id, name, arguments}`) → `tool_call`; a tool
message's `tool_call_id` / `id` + content → `tool_call_response`. Anthropic content blocks (`thinking`,
`tool_use`, `tool_result`) map to the same parts.
"""

from __future__ import annotations

import re
from typing import Any

from contract.formats.jsonvalue import try_json

GenAIMessage = dict[str, Any]
Attrs = dict[str, Any]

_OPENINFERENCE = re.compile(r"llm\.(input|output)_messages\.(\d+)\.message\.(.+)")
_OPENLLMETRY = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")
_INDEXED = re.compile(r"([a-z_]+)\.(\d+)\.(.+)")
_EVENT_ROLES = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}


def _json_value(value: Any) -> Any:
    """A JSON-string attribute decoded (structured AnyValues come decoded already)."""
    if isinstance(value, str):
        ok, decoded = try_json(value)
        return decoded if ok else value
    return value


def _text_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _content_parts(content: Any) -> list[dict[str, Any]]:
    """OpenAI / Anthropic message content as GenAI parts (unknown blocks kept for the parser to refuse)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if not isinstance(content, list):
        return [{"type": "text", "content": content}]  # not text: the parser names the field
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
            continue
        if not isinstance(block, dict):
            parts.append({"type": "text", "content": block})
            continue
        kind = block.get("type")
        if kind in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": block.get("text", block.get("content"))})
        elif kind in ("thinking", "reasoning"):
            parts.append({"type": "reasoning",
                          "content": block.get("thinking", block.get("content", block.get("text")))})
        elif kind == "tool_use":
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                          "arguments": block.get("input")})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"),
                          "response": _flatten_result(block.get("content"))})
        elif kind == "tool-call":  # Vercel AI SDK (`args` before v5, `input` since)
            parts.append({"type": "tool_call", "id": block.get("toolCallId"), "name": block.get("toolName"),
                          "arguments": block.get("input", block.get("args"))})
        elif kind == "tool-result":
            parts.append({"type": "tool_call_response", "id": block.get("toolCallId"),
                          "response": _vercel_output(block.get("output", block.get("result")))})
        else:
            parts.append(block)
    return parts


def _vercel_output(output: Any) -> Any:
    """A Vercel AI SDK v5 tool output ({type: "text" | "json" | …, value}) as its value."""
    if isinstance(output, dict) and "value" in output and output.get("type") in ("text", "json", "error-text",
                                                                                   "error-json"):
        return output["value"]
    return output


def _vercel(attrs: Attrs) -> tuple[list[GenAIMessage], list[GenAIMessage]] | None:
    """Vercel AI SDK `ai.*.doGenerate` / `doStream` spans: `ai.prompt.messages`, `ai.response.text`,
    `ai.response.reasoning`, `ai.response.toolCalls`."""
    if "ai.prompt.messages" not in attrs:
        return None
    inputs = _messages_value(attrs["ai.prompt.messages"], "user")
    parts: list[dict[str, Any]] = []
    if attrs.get("ai.response.reasoning"):
        parts.append({"type": "reasoning", "content": attrs["ai.response.reasoning"]})
    if attrs.get("ai.response.text"):
        parts.append({"type": "text", "content": attrs["ai.response.text"]})
    calls = _json_value(attrs.get("ai.response.toolCalls"))
    if isinstance(calls, list):
        parts.extend({**c, "type": "tool-call"} if isinstance(c, dict) else c for c in calls)
    outputs = [from_chat_message({"role": "assistant", "content": parts}, "assistant")] if parts else []
    return inputs, outputs


def _flatten_result(content: Any) -> Any:
    """An Anthropic tool_result's content: text blocks joined, anything else as is."""
    if isinstance(content, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        return "\n".join(str(b.get("text", "")) for b in content)
    return content


def _call_part(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict):
        return {"type": "tool_call", "name": None}
    fn: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else call
    return {"type": "tool_call", "id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")}


def from_chat_message(m: Any, default_role: str) -> GenAIMessage:
    """An OpenAI-shaped (or already GenAI-shaped) message as a GenAI message."""
    if not isinstance(m, dict):
        return {"role": default_role, "parts": [{"type": "text", "content": m}]}
    role = m.get("role") or default_role
    if isinstance(m.get("parts"), list):
        return {**m, "role": role}
    parts: list[dict[str, Any]] = []
    reasoning = _text_of(m.get("reasoning_content")) or _text_of(m.get("reasoning"))
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    call_id = m.get("tool_call_id", m.get("id") if role == "tool" else None)
    if role == "tool" and call_id is not None:
        parts.append({"type": "tool_call_response", "id": call_id, "response": _flatten_result(m.get("content"))})
    else:
        parts.extend(_content_parts(m.get("content")))
    calls = m.get("tool_calls")
    if isinstance(calls, list):
        parts.extend(_call_part(c) for c in calls)
    elif isinstance(m.get("function_call"), dict):
        parts.append(_call_part(m["function_call"]))
    out: GenAIMessage = {"role": role, "parts": parts}
    if role == "tool" and isinstance(m.get("name"), str):
        out["name"] = m["name"]
    return out


def _messages_value(value: Any, default_role: str) -> list[GenAIMessage]:
    value = _json_value(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [{"role": default_role, "parts": [{"type": "text", "content": value}]}]
    return [from_chat_message(m, default_role) for m in value]


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"tool_calls.0.tool_call.id": x, "role": r} → {"tool_calls": [{"tool_call.id": x}], "role": r}."""
    out: dict[str, Any] = {}
    lists: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in flat.items():
        m = _INDEXED.fullmatch(key)
        if m:
            lists.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
        else:
            out[key] = value
    for name, items in lists.items():
        out[name] = [items[k] for k in sorted(items)]
    return out


def _indexed(attrs: Attrs, pattern: re.Pattern[str]) -> dict[str, dict[int, dict[str, Any]]]:
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in attrs.items():
        m = pattern.fullmatch(key)
        if m:
            groups.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
    return groups


def _openinference(attrs: Attrs) -> tuple[list[GenAIMessage], list[GenAIMessage]] | None:
    groups = _indexed(attrs, _OPENINFERENCE)
    if not groups:
        return None
    sides: dict[str, list[GenAIMessage]] = {"input": [], "output": []}
    for side, items in groups.items():
        for k in sorted(items):
            m = _unflatten(items[k])
            contents = m.get("contents")
            content: Any = m.get("content")
            if isinstance(contents, list) and content is None:
                content = [{"type": c.get("message_content.type", "text"), "text": c.get("message_content.text")}
                           for c in contents]
            calls = [{"id": c.get("tool_call.id"), "name": c.get("tool_call.function.name"),
                      "arguments": c.get("tool_call.function.arguments")} for c in m.get("tool_calls", [])]
            chat = {"role": m.get("role"), "content": content, "tool_calls": calls or None,
                    "tool_call_id": m.get("tool_call_id"), "name": m.get("name"),
                    "reasoning_content": m.get("reasoning_content")}
            sides[side].append(from_chat_message(chat, "assistant" if side == "output" else "user"))
    return sides["input"], sides["output"]


def _openllmetry(attrs: Attrs) -> tuple[list[GenAIMessage], list[GenAIMessage]] | None:
    groups = _indexed(attrs, _OPENLLMETRY)
    if not groups:
        return None
    sides: dict[str, list[GenAIMessage]] = {"prompt": [], "completion": []}
    for side, items in groups.items():
        for k in sorted(items):
            m = _unflatten(items[k])
            content = _json_value(m.get("content")) if str(m.get("content", "")).startswith("[{") else m.get("content")
            chat = {"role": m.get("role"), "content": content, "tool_calls": m.get("tool_calls"),
                    "tool_call_id": m.get("tool_call_id"), "reasoning_content": m.get("reasoning")}
            if "function_call.name" in m and not m.get("tool_calls"):
                chat["function_call"] = {"name": m["function_call.name"], "arguments": m.get("function_call.arguments")}
            sides[side].append(from_chat_message(chat, "assistant" if side == "completion" else "user"))
    return sides["prompt"], sides["completion"]


def _event_body(event: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = event.get("attributes", {})
    body = _json_value(attrs.get("gen_ai.event.content"))
    return body if isinstance(body, dict) else attrs


def _events(events: list[dict[str, Any]]) -> tuple[list[GenAIMessage], list[GenAIMessage]] | None:
    inputs: list[GenAIMessage] = []
    outputs: list[GenAIMessage] = []
    for event in events:
        name = event.get("name")
        if name in _EVENT_ROLES:
            body = dict(_event_body(event))
            body["role"] = body.get("role") or _EVENT_ROLES[name]
            for key in ("content", "tool_calls"):
                body[key] = _json_value(body.get(key)) if key == "tool_calls" else body.get(key)
            inputs.append(from_chat_message(body, _EVENT_ROLES[name]))
        elif name == "gen_ai.choice":
            body = _event_body(event)
            message = _json_value(body.get("message"))
            if not isinstance(message, dict):
                message = {"content": body.get("content"), "tool_calls": _json_value(body.get("tool_calls"))}
            outputs.append(from_chat_message({**message, "role": message.get("role") or "assistant"}, "assistant"))
    if not inputs and not outputs:
        return None
    return inputs, outputs


def span_messages(attrs: Attrs, events: list[dict[str, Any]]) -> list[GenAIMessage] | None:
    """The span's context then its output, as GenAI messages; None when the span carries none."""
    if "gen_ai.input.messages" in attrs or "gen_ai.output.messages" in attrs:
        system = _json_value(attrs.get("gen_ai.system_instructions"))
        head: list[GenAIMessage] = []
        if isinstance(system, list) and system:
            head = [{"role": "system", "parts": [p if isinstance(p, dict) else {"type": "text", "content": p}
                                                 for p in system]}]
        elif isinstance(system, str) and system:
            head = [{"role": "system", "parts": [{"type": "text", "content": system}]}]
        inputs = _messages_value(attrs["gen_ai.input.messages"], "user") if "gen_ai.input.messages" in attrs else []
        outputs = (_messages_value(attrs["gen_ai.output.messages"], "assistant")
                   if "gen_ai.output.messages" in attrs else [])
        return head + inputs + outputs
    for reader in (_openinference, _openllmetry, _vercel):
        found = reader(attrs)
        if found is not None:
            return found[0] + found[1]
    found = _events(events)
    return None if found is None else found[0] + found[1]


def is_tool_span(attrs: Attrs) -> bool:
    return (attrs.get("gen_ai.operation.name") == "execute_tool" or attrs.get("openinference.span.kind") == "TOOL"
            or attrs.get("ai.operationId") == "ai.toolCall")


def tool_result(attrs: Attrs) -> tuple[str, Any] | None:
    """(call id, result) of a tool-execution span that records both."""
    call_id = attrs.get("gen_ai.tool.call.id", attrs.get("tool_call.id", attrs.get("ai.toolCall.id")))
    result = attrs.get("gen_ai.tool.call.result", attrs.get("output.value", attrs.get("ai.toolCall.result")))
    if not isinstance(call_id, str) or result is None:
        return None
    return call_id, result
