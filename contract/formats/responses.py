"""OpenAI Responses API format ("openai-responses"): `instructions`, `input` and `output` (+ `tools`)
as a Responses API request and its response write them.

Canonical rules:
- `instructions` (a string) → a first system message. `input` is a string (one user message) or a
  list of items; `output` a list of items; the items of `input` then `output` are read in order
  (one of them is required; together with `instructions` they give at least one message). Unknown
  keys are ignored.
- `message` items (also `{role, content}` without `type`): role user, system or developer
  (→ system) become that message; `content` is a string or a list of `input_text` / `output_text`
  parts joined by "\\n" (`refusal` parts too, in assistant messages); images and files are refused
  (422 unsupported_content), as is any other item type.
- consecutive assistant-side items (`reasoning`, assistant `message`, `function_call`,
  `custom_tool_call`) form one canonical assistant message, rendered in order as in `parts`:
  `reasoning` → "<think>\\n" + text + "\\n</think>\\n", where the text is its `content`
  (`reasoning_text` parts joined by "\\n") when it has some, else its `summary` (`summary_text`
  parts joined by "\\n\\n"), and nothing when both are empty (`encrypted_content` is kept, never
  trained); assistant text as is; `function_call` {call_id, name, arguments} → a Hermes block and a
  tool call {id: call_id, name, arguments parsed as for openai, raw_arguments: the string as
  received}; `custom_tool_call` {call_id, name, input} → the same with the free-text `input` as
  arguments. Item fields that are not in the text (ids, status, phase, encrypted_content,
  annotations) stay in `parts` verbatim.
- `function_call_output` / `custom_tool_call_output` {call_id, output: a string or text parts} → a
  tool message with `tool_call_id` = call_id, which must answer an earlier call
  (unknown_tool_call_id).
- auto spans: reasoning → reason, assistant text → reason (action when the message is a final
  answer), each call → action, outputs → observation.
Export: the first system message as `instructions`; the items rebuilt in order from `parts` over
the text (`arguments` as received); the assistant items after the last user or tool message form
`output`, everything before them `input`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from contract.formats.base import (
    ParsedTrajectory,
    TextParts,
    export_arguments,
    fail,
    json_type,
    observation_content,
    opt_str,
    parse_arguments,
    parse_tools,
    render_tool_call,
    req_dict,
    req_role,
    req_str,
    split_calls,
)
from contract.formats.parts import (
    CALL,
    TEXT,
    THINK,
    Piece,
    Range,
    assistant_message,
    block_arguments,
    keep,
    split_lengths,
    split_turn,
    turn_spans,
)
from contract.formats.segment import auto_spans
from contract.spans import Message, Role, ToolCall

_ROLES: dict[str, Role] = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
_KINDS = {"reasoning": THINK, "message": TEXT, "function_call": CALL, "custom_tool_call": CALL}
_OUTPUTS = ("function_call_output", "custom_tool_call_output")
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}  # part type → its text field
_REFUSED = "type {kind!r} is not supported (images, files and hosted tools are refused)"
# A call's `output`: a string, null (→ "") or text parts joined by "\n".
_OUTPUT_PARTS = TextParts(("input_text", "output_text"), "a string or an array of content parts", _REFUSED)


def _unsupported(field: str, kind: Any) -> NoReturn:
    fail(field, "unsupported_content", _REFUSED.format(kind=kind))


def _item_type(item: dict[str, Any]) -> Any:
    return item.get("type", "message" if "role" in item else None)


def _parts_text(content: Any, field: str, allowed: tuple[str, ...]) -> tuple[list[str], list[dict[str, Any]]]:
    """The texts of a list of content parts and each part's other fields (with `length`)."""
    if not isinstance(content, list):
        fail(field, "invalid_type", f"must be a string or an array of content parts, got {json_type(content)}")
    texts, kept = [], []
    for k, part in enumerate(content):
        pf = f"{field}[{k}]"
        req_dict(part, pf)
        kind = part.get("type")
        if kind not in allowed:
            _unsupported(f"{pf}.type", kind)
        key = _TEXT_PARTS.get(kind, "text")
        text = req_str(part.get(key), f"{pf}.{key}")
        texts.append(text)
        kept.append({**keep(part, (key,), pf, depth=5), "length": len(text)})
    return texts, kept


def _content_text(content: Any, field: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return req_str(content, field)
    return "\n".join(_parts_text(content, field, ("input_text", "output_text"))[0])


def _message_piece(item: dict[str, Any], f: str) -> Piece:
    content = item.get("content")
    if content is None:
        fail(f"{f}.content", "missing_field", "is required")
    part = keep(item, ("content",), f)
    if isinstance(content, str):
        return Piece(TEXT, req_str(content, f"{f}.content"), part)
    texts, part["content"] = _parts_text(content, f"{f}.content", ("output_text", "input_text", "refusal"))
    return Piece(TEXT, "\n".join(texts), part)


def _reasoning_piece(item: dict[str, Any], f: str) -> Piece:
    opt_str(item.get("encrypted_content"), f"{f}.encrypted_content")
    if isinstance(item.get("content"), list) and item["content"]:
        texts, kept = _parts_text(item["content"], f"{f}.content", ("reasoning_text",))
        part = keep(item, ("content",), f)
        part["content_lengths"] = [p["length"] for p in kept]
        return Piece(THINK, "\n".join(texts), part)
    summary = item.get("summary")
    texts, kept = _parts_text([] if summary is None else summary, f"{f}.summary", ("summary_text",))
    part = keep(item, ("summary",), f)
    part["summary_lengths"] = [p["length"] for p in kept]
    return Piece(THINK, "\n\n".join(texts), part)


def _call_piece(item: dict[str, Any], f: str, kind: str) -> tuple[Piece, ToolCall]:
    call_id = req_str(item.get("call_id"), f"{f}.call_id")
    name = req_str(item.get("name"), f"{f}.name")
    if not name:
        fail(f"{f}.name", "invalid_tool_call", "must not be empty")
    if kind == "function_call":
        if "arguments" not in item:
            fail(f"{f}.arguments", "missing_field", "is required")
        arguments = parse_arguments(item["arguments"], f"{f}.arguments")
        call: ToolCall = {"id": call_id, "name": name, "arguments": arguments}
        if isinstance(item["arguments"], str):
            call["raw_arguments"] = item["arguments"]
        drop = ("call_id", "name", "arguments")
    else:
        call = {"id": call_id, "name": name, "arguments": req_str(item.get("input"), f"{f}.input")}
        drop = ("call_id", "name", "input")
    return Piece(CALL, render_tool_call(name, call["arguments"], f), keep(item, drop, f)), call


def _items(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    """(field, item) for the items of `input` then `output`."""
    items: list[tuple[str, Any]] = []
    raw_input, raw_output = payload.get("input"), payload.get("output")
    if raw_input is None and raw_output is None:
        fail("input", "missing_field", "give input, output or both")
    if isinstance(raw_input, str):
        items.append(("input", {"role": "user", "content": raw_input}))
    for name, value in (("input", None if isinstance(raw_input, str) else raw_input), ("output", raw_output)):
        if value is None:
            continue
        if not isinstance(value, list):
            fail(name, "invalid_type", f"must be an array of items, got {json_type(value)}")
        items.extend((f"{name}[{k}]", item) for k, item in enumerate(value))
    return items


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    tools = parse_tools(payload.get("tools"), "tools")
    messages: list[Message] = []
    ranges: dict[int, list[Range]] = {}
    if payload.get("instructions") is not None:
        messages.append({"role": "system", "text": req_str(payload["instructions"], "instructions")})
    pieces: list[Piece] = []
    calls: list[ToolCall] = []
    call_ids: set[str] = set()
    sanitized = 0

    def flush() -> None:
        if pieces:
            msg, ranges[len(messages)] = assistant_message(list(pieces), list(calls))
            messages.append(msg)
            pieces.clear()
            calls.clear()

    for f, item in _items(payload):
        req_dict(item, f)
        kind = _item_type(item)
        if kind == "message":
            role = req_role(item.get("role"), _ROLES, f"{f}.role")
            if role == "assistant":
                pieces.append(_message_piece(item, f))
            else:
                flush()
                messages.append({"role": _ROLES[role], "text": _content_text(item.get("content"), f"{f}.content")})
        elif kind == "reasoning":
            pieces.append(_reasoning_piece(item, f))
        elif kind in ("function_call", "custom_tool_call"):
            piece, call = _call_piece(item, f, kind)
            pieces.append(piece)
            calls.append(call)
            if call["id"] is not None:
                call_ids.add(call["id"])
        elif kind in _OUTPUTS:
            flush()
            call_id = req_str(item.get("call_id"), f"{f}.call_id")
            if call_id not in call_ids:
                fail(f"{f}.call_id", "unknown_tool_call_id", f"{call_id!r} matches no call of an earlier item")
            text, replaced = observation_content(item.get("output"), f"{f}.output", _OUTPUT_PARTS)
            messages.append({"role": "tool", "text": text, "tool_call_id": call_id})
            sanitized += replaced
        else:
            _unsupported(f"{f}.type", kind)
    flush()
    if not messages:
        fail("input", "empty", "input and output hold no items")
    spans = auto_spans(messages, lambda i, text, final: turn_spans(text, ranges[i], final))
    return ParsedTrajectory(messages=messages, spans=spans, tools=tools, sanitized=sanitized)


def _rebuild(part: dict[str, Any], kind: str, text: str, call: ToolCall | None) -> dict[str, Any] | None:
    """One item from its kept fields and its text; None when the lengths do not fit the text."""
    item = {k: v for k, v in part.items() if k not in ("length", "summary_lengths", "content_lengths")}
    if kind == CALL and call is not None:
        head: dict[str, Any] = {"type": item.pop("type", "function_call"), "call_id": call["id"], "name": call["name"]}
        if head["type"] == "custom_tool_call":
            head["input"] = block_arguments(text, call)
        else:
            raw, value = call.get("raw_arguments"), block_arguments(text, call)
            # As received: the string when one came, an object as the object.
            head["arguments"] = raw if isinstance(raw, str) else value if isinstance(value, dict) else (
                export_arguments(value))
        return {**head, **item}
    if kind == THINK:
        key, sep, part_type = (("content", "\n", "reasoning_text") if "content_lengths" in part
                               else ("summary", "\n\n", "summary_text"))
        lengths = part.get(f"{key}_lengths")
        texts = split_lengths(text, lengths, sep)
        if texts is None:
            return None
        item[key] = [{"type": part_type, "text": t} for t in texts]
        return item
    content = part.get("content")
    if not isinstance(content, list):
        item["content"] = text
        return item
    texts = split_lengths(text, [p.get("length") if isinstance(p, dict) else None for p in content], "\n")
    if texts is None:
        return None
    item["content"] = [{**{k: v for k, v in p.items() if k != "length"}, _TEXT_PARTS.get(p.get("type"), "text"): t}
                       for p, t in zip(content, texts, strict=True)]
    return item


def part_kinds(parts: list[Any]) -> list[str | None]:
    """The piece kind (`parts.THINK` …) of each stored part of an assistant message; None where a part
    is not one of this format's items."""
    return [_KINDS.get(_item_type(p)) if isinstance(p, dict) else None for p in parts]


def _assistant_items(msg: Message, call_types: dict[str | None, str]) -> list[dict[str, Any]]:
    calls = msg.get("tool_calls") or []
    parts = msg.get("parts")
    if isinstance(parts, list):
        kinds = part_kinds(parts)
        texts = split_turn(msg["text"], parts, kinds)
        if texts is not None and kinds.count(CALL) == len(calls):
            items: list[dict[str, Any]] = []
            pending = iter(calls)
            for part, kind, text in zip(parts, kinds, texts, strict=True):
                call = next(pending) if kind == CALL else None
                item = _rebuild(part, kind or TEXT, text, call)
                if item is None:
                    break
                if call is not None:
                    call_types[call["id"]] = item["type"]
                items.append(item)
            else:
                return items
    # Messages that did not come from this format: free text, then the calls.
    free, found = split_calls(msg)
    out: list[dict[str, Any]] = []
    if free or not found:
        out.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": free}]})
    for c in found:
        call_types[c["id"]] = "function_call"
        out.append({"type": "function_call", "call_id": c["id"], "name": c["name"],
                    "arguments": export_arguments(c["arguments"])})
    return out


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    rest = list(messages)
    if rest and rest[0]["role"] == "system":
        result["instructions"] = rest.pop(0)["text"]
    items: list[dict[str, Any]] = []
    call_types: dict[str | None, str] = {}
    boundary = 0  # where the trailing assistant items (the response's output) start
    for msg in rest:
        if msg["role"] == "assistant":
            items.extend(_assistant_items(msg, call_types))
            continue
        if msg["role"] == "tool":
            call_id = msg.get("tool_call_id")
            items.append({"type": call_types.get(call_id, "function_call") + "_output", "call_id": call_id,
                          "output": msg["text"]})
        else:
            items.append({"role": msg["role"], "content": msg["text"]})
        boundary = len(items)
    if boundary or boundary == len(items):
        result["input"] = items[:boundary]
    if boundary < len(items):
        result["output"] = items[boundary:]
    if tools is not None:
        result["tools"] = tools
    return result
