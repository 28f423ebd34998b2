"""Anthropic Messages API format: `messages` (+ `system`, `tools`) as the Messages API takes them.

Canonical rules:
- `system`: a string or a list of text blocks (joined by "\\n") → a first system message.
- roles user|assistant; `content` is a string or a list of blocks; unknown keys are ignored.
- user blocks: `text` (consecutive ones joined by "\\n" into one user message) and `tool_result`
  ({tool_use_id, content: a string, text blocks joined by "\\n", or absent → "", is_error}) → a
  tool message with `tool_call_id` (it must answer a `tool_use` of an earlier assistant message,
  else unknown_tool_call_id) and `is_error` when given; its text is never trained, so NUL and lone
  surrogates become U+FFFD (counted in `sanitized`). A user message that holds tool results and
  text becomes tool and user messages in the blocks' order. `image`, `document` and every other
  block are refused (422 unsupported_content): they are never trained, and a placeholder would
  change what the model saw.
- assistant blocks render in order as in `parts` (see that module): `thinking` → reasoning
  ("<think>\\n" + thinking + "\\n</think>\\n"; `signature` kept), `redacted_thinking` (`data` kept,
  no text, never trained), `text`, `tool_use` {id, name, input} → a Hermes block plus a tool call
  {id, name, arguments: input as received} (an input sent as a JSON string is parsed, the string
  kept in `raw_arguments`). "thinking, text, tool_use…" renders exactly like an openai message
  with `reasoning_content`; interleaved thinking stays where the model wrote it.
  Server-tool blocks (`server_tool_use`, `web_search_tool_result`, …) are refused.
  The block fields that are not in the text (signature, data, cache_control, citations) stay in
  `parts` verbatim.
- auto spans: thinking → reason, text → reason (action when the message is a final answer),
  each tool_use → action, tool results → observation.
Export: `system` as a string; each assistant message's blocks rebuilt in order from `parts` over
the text (`input` read back from its Hermes block, so key order is as received); tool results go
into one user message after their assistant message, text that followed them joins it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from contract.formats.base import (
    ParsedTrajectory,
    TextParts,
    content_text,
    fail,
    json_type,
    observation_content,
    opt_str,
    parse_arguments,
    parse_tools,
    render_tool_call,
    req_dict,
    req_list,
    req_role,
    req_str,
    split_calls,
)
from contract.formats.parts import (
    CALL,
    OPAQUE,
    TEXT,
    THINK,
    Piece,
    Range,
    assistant_message,
    block_arguments,
    keep,
    split_turn,
    turn_spans,
)
from contract.formats.segment import auto_spans
from contract.spans import Message, ToolCall

_KINDS = {"thinking": THINK, "redacted_thinking": OPAQUE, "text": TEXT, "tool_use": CALL}
_TEXT_KEY = {"thinking": "thinking", "text": "text"}  # the block field that holds the piece's text
_REFUSED = "blocks of type {kind!r} are not supported here (images, documents and server-tool blocks are refused)"
# `system` and a tool_result's `content`: a string, null (→ "") or text blocks joined by "\n".
_TEXT_BLOCKS = TextParts(("text",), "a string or an array of text blocks", _REFUSED)


def _unsupported(field: str, kind: Any) -> NoReturn:
    fail(field, "unsupported_content", _REFUSED.format(kind=kind))


def _assistant(content: Any, f: str, call_ids: set[str]) -> tuple[Message, list[Range]]:
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = content
    else:
        fail(f"{f}.content", "invalid_type", f"must be a string or an array of blocks, got {json_type(content)}")
    pieces: list[Piece] = []
    calls: list[ToolCall] = []
    for k, block in enumerate(blocks):
        bf = f"{f}.content[{k}]"
        req_dict(block, bf)
        kind_name = block.get("type")
        kind = _KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            _unsupported(f"{bf}.type", kind_name)
        if kind == CALL:
            call_id = req_str(block.get("id"), f"{bf}.id")
            name = req_str(block.get("name"), f"{bf}.name")
            if not name:
                fail(f"{bf}.name", "invalid_tool_call", "must not be empty")
            if "input" not in block:
                fail(f"{bf}.input", "missing_field", "is required")
            arguments = parse_arguments(block["input"], f"{bf}.input")
            call: ToolCall = {"id": call_id, "name": name, "arguments": arguments}
            if isinstance(block["input"], str):  # some logs hold the input as a JSON string
                call["raw_arguments"] = block["input"]
            calls.append(call)
            call_ids.add(call_id)
            pieces.append(Piece(CALL, render_tool_call(name, arguments, f"{bf}.input"),
                                keep(block, ("id", "name", "input"), bf)))
        elif kind == OPAQUE:
            req_str(block.get("data"), f"{bf}.data")
            pieces.append(Piece(OPAQUE, "", keep(block, (), bf)))
        else:
            key = _TEXT_KEY[kind_name]
            text = req_str(block.get(key), f"{bf}.{key}")
            if kind == THINK:
                opt_str(block.get("signature"), f"{bf}.signature")
            pieces.append(Piece(kind, text, keep(block, (key,), bf)))
    return assistant_message(pieces, calls)


def _tool_result(block: dict[str, Any], bf: str, call_ids: set[str]) -> tuple[Message, int]:
    call_id = req_str(block.get("tool_use_id"), f"{bf}.tool_use_id")
    if call_id not in call_ids:
        fail(f"{bf}.tool_use_id", "unknown_tool_call_id",
             f"{call_id!r} matches no tool_use block of an earlier assistant message")
    text, replaced = observation_content(block.get("content"), f"{bf}.content", _TEXT_BLOCKS)
    msg: Message = {"role": "tool", "text": text, "tool_call_id": call_id}
    if "is_error" in block:
        if not isinstance(block["is_error"], bool):
            fail(f"{bf}.is_error", "invalid_type", f"must be a boolean, got {json_type(block['is_error'])}")
        msg["is_error"] = block["is_error"]
    return msg, replaced


def _user(content: Any, f: str, call_ids: set[str]) -> tuple[list[Message], int]:
    """The messages of one user turn (tool results become tool messages) and the characters sanitized."""
    if isinstance(content, str):
        return [{"role": "user", "text": req_str(content, f"{f}.content")}], 0
    if not isinstance(content, list):
        fail(f"{f}.content", "invalid_type", f"must be a string or an array of blocks, got {json_type(content)}")
    out: list[Message] = []
    replaced = 0
    texts: list[str] | None = [] if not content else None
    for k, block in enumerate(content):
        bf = f"{f}.content[{k}]"
        req_dict(block, bf)
        if block.get("type") == "text":
            texts = [] if texts is None else texts
            texts.append(req_str(block.get("text"), f"{bf}.text"))
        elif block.get("type") == "tool_result":
            if texts is not None:
                out.append({"role": "user", "text": "\n".join(texts)})
                texts = None
            msg, n = _tool_result(block, bf, call_ids)
            out.append(msg)
            replaced += n
        else:
            _unsupported(f"{bf}.type", block.get("type"))
    if texts is not None:
        out.append({"role": "user", "text": "\n".join(texts)})
    return out, replaced


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    raw_messages = req_list(payload.get("messages"), "messages")
    tools = parse_tools(payload.get("tools"), "tools")
    messages: list[Message] = []
    ranges: dict[int, list[Range]] = {}
    if payload.get("system") is not None:
        messages.append({"role": "system", "text": content_text(payload["system"], "system", _TEXT_BLOCKS)})
    call_ids: set[str] = set()
    sanitized = 0
    for i, m in enumerate(raw_messages):
        f = f"messages[{i}]"
        req_dict(m, f)
        role = req_role(m.get("role"), ("user", "assistant"), f"{f}.role")
        if m.get("content") is None:
            fail(f"{f}.content", "missing_field", "is required")
        if role == "assistant":
            msg, ranges[len(messages)] = _assistant(m["content"], f, call_ids)
            messages.append(msg)
        else:
            turn, replaced = _user(m["content"], f, call_ids)
            messages.extend(turn)
            sanitized += replaced
    spans = auto_spans(messages, lambda i, text, final: turn_spans(text, ranges[i], final))
    return ParsedTrajectory(messages=messages, spans=spans, tools=tools, sanitized=sanitized)


def part_kinds(parts: list[Any]) -> list[str | None]:
    """The piece kind (`parts.THINK` …) of each stored part of an assistant message; None where a part
    is not one of this format's blocks."""
    return [_KINDS.get(p.get("type", "")) if isinstance(p, dict) else None for p in parts]


def _assistant_blocks(msg: Message) -> list[dict[str, Any]]:
    calls = msg.get("tool_calls") or []
    parts = msg.get("parts")
    if isinstance(parts, list):
        kinds = part_kinds(parts)
        texts = split_turn(msg["text"], parts, kinds)
        if texts is not None and kinds.count(CALL) == len(calls):
            blocks: list[dict[str, Any]] = []
            k = 0
            for part, kind, text in zip(parts, kinds, texts, strict=True):
                kept = {key: v for key, v in part.items() if key != "length"}
                if kind == CALL:
                    call = calls[k]
                    k += 1
                    raw = call.get("raw_arguments")
                    head = {"type": "tool_use", "id": call["id"], "name": call["name"],
                            "input": raw if isinstance(raw, str) else block_arguments(text, call)}
                else:
                    head = {"type": part["type"]} if kind == OPAQUE else {
                        "type": part["type"], _TEXT_KEY[part["type"]]: text}
                blocks.append({**head, **kept})
            return blocks
    # Messages that did not come from this format: free text, then the calls.
    free, found = split_calls(msg)
    out: list[dict[str, Any]] = [{"type": "text", "text": free}] if free or not found else []
    out.extend({"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]} for c in found)
    return out


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    rest = list(messages)
    if rest and rest[0]["role"] == "system":
        result["system"] = rest.pop(0)["text"]
    out: list[dict[str, Any]] = []
    for msg in rest:
        prev = out[-1] if out and out[-1]["role"] == "user" else None
        if msg["role"] == "assistant":
            out.append({"role": "assistant", "content": _assistant_blocks(msg)})
        elif msg["role"] == "tool":
            block: dict[str, Any] = {"type": "tool_result"}
            if "tool_call_id" in msg:
                block["tool_use_id"] = msg["tool_call_id"]
            block["content"] = msg["text"]
            if "is_error" in msg:
                block["is_error"] = msg["is_error"]
            if prev is None:
                out.append({"role": "user", "content": [block]})
            else:  # tool results answer the assistant message before them, in one user message
                if isinstance(prev["content"], str):
                    prev["content"] = [{"type": "text", "text": prev["content"]}]
                prev["content"].append(block)
        elif prev is not None and isinstance(prev["content"], list) and prev["content"][-1]["type"] == "tool_result":
            prev["content"].append({"type": "text", "text": msg["text"]})
        else:  # user messages, and system messages after the first (the API has no place for them)
            out.append({"role": "user", "content": msg["text"]})
    result["messages"] = out
    if tools is not None:
        result["tools"] = tools
    return result
