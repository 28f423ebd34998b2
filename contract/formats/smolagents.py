"""smolagents CodeAct step logs: `messages` with roles system/user/assistant/tool-call/tool-response
(content a string, null, or {"type": "text", "text"} parts joined with "\\n"), optional `task` and `tools`.

Canonical rules:
- system, user → themselves; tool-response → tool (errors included); assistant → assistant, text exact.
- tool-call messages repeat the assistant's code, so they are not messages of their own: they attach
  to the assistant message just before them. Content "Calling tools:\\n" + a Python-repr list of
  {id, type, function: {name, arguments}} is read with ast.literal_eval into
  `tool_calls: [{id, name, arguments}]` (NOT rendered into the text: the code already is the
  action); any other content is kept verbatim as `raw_tool_calls` (a string). A tool-call with no
  assistant message before it (or a second one for the same message) gets a new assistant message
  with empty text.
- `task` becomes a user message (after the leading system messages) only when the log has none.
- auto spans in assistant texts: the action starts at the first line starting with "Code:", else at
  the last code-block opener at line start ("```py", "```python", "<code>"); it ends after the first
  "<end_code>" after it, else after the last "</code>", else after the closing "```", else at the end
  of the text. Text before the action (the Thought) → reason; trailing whitespace joins the action,
  other trailing text → reason; no code at all → the whole text is reason. Code calling
  final_answer(...) is an action like any other. tool-response → observation; user text starting
  with "Observation:" → observation.
Export writes content as one text part, and a tool-call message after each assistant that had calls.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from contract.formats.base import (
    ParsedTrajectory,
    content_text,
    is_json_value,
    opt_str,
    parse_tools,
    req_dict,
    req_list,
    req_role,
)
from contract.formats.segment import (
    Piece,
    auto_spans,
)
from contract.spans import Message, Role, SpanKind, ToolCall

# Log role → canonical role; a tool-call log message attaches to the assistant message before it.
_ROLES: dict[str, Role | None] = {"system": "system", "user": "user", "assistant": "assistant", "tool-call": None,
                                  "tool-response": "tool"}
_CALLING = "Calling tools:\n"
_CODE_LABEL = re.compile(r"^Code:", re.M)
_CODE_OPEN = re.compile(r"^[ \t]*(?:```(?:py|python)[ \t]*$|<code>)", re.M)


def codeact_spans(text: str) -> list[Piece]:
    """Reason for the Thought, action for "Code:" and the code block through <end_code> (see module doc)."""
    label = _CODE_LABEL.search(text)
    if label is not None:
        start = label.start()
    else:
        openers = list(_CODE_OPEN.finditer(text))
        if not openers:
            return [(0, len(text), SpanKind.REASON)]
        start = openers[-1].start()
    end = text.find("<end_code>", start)
    if end >= 0:
        end += len("<end_code>")
    elif (close := text.rfind("</code>", start)) >= 0:
        end = close + len("</code>")
    else:
        first, last = text.find("```", start), text.rfind("```", start)
        end = last + 3 if last > first >= 0 else len(text)
    out: list[Piece] = [(0, start, SpanKind.REASON)] if start > 0 else []
    if text[end:].isspace() or end == len(text):
        out.append((start, len(text), SpanKind.ACTION))
    else:
        out += [(start, end, SpanKind.ACTION), (end, len(text), SpanKind.REASON)]
    return out


def _read_calls(text: str) -> list[ToolCall] | None:
    """`tool_calls` from a "Calling tools:\\n[...]" text, or None when it is not exactly that shape."""
    if not text.startswith(_CALLING):
        return None
    try:
        value = ast.literal_eval(text[len(_CALLING) :])
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not value:
        return None
    calls: list[ToolCall] = []
    for item in value:
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return None
        call_id, arguments = item.get("id"), fn.get("arguments")
        if call_id is not None and not isinstance(call_id, str):
            return None
        if not is_json_value([fn["name"], arguments]):
            return None
        calls.append({"id": call_id, "name": fn["name"], "arguments": arguments})
    return calls


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    raw_messages = req_list(payload.get("messages"), "messages")
    task = opt_str(payload.get("task"), "task")
    tools = parse_tools(payload.get("tools"), "tools")
    messages: list[Message] = []
    for i, m in enumerate(raw_messages):
        f = f"messages[{i}]"
        req_dict(m, f)
        role = req_role(m.get("role"), _ROLES, f"{f}.role")
        text = content_text(m.get("content"), f"{f}.content")
        canonical = _ROLES[role]
        if canonical is None:
            prev = messages[-1] if messages else None
            if not prev or prev["role"] != "assistant" or "tool_calls" in prev or "raw_tool_calls" in prev:
                prev = {"role": "assistant", "text": ""}
                messages.append(prev)
            calls = _read_calls(text)
            if calls is None:
                prev["raw_tool_calls"] = text
            else:
                prev["tool_calls"] = calls
        else:
            messages.append({"role": canonical, "text": text})
    if task is not None and not any(m["role"] == "user" for m in messages):
        at = next((k for k, m in enumerate(messages) if m["role"] != "system"), len(messages))
        messages.insert(at, {"role": "user", "text": task})
    spans = auto_spans(messages, lambda i, text, final: codeact_spans(text))
    return ParsedTrajectory(messages=messages, spans=spans, tools=tools)


def _message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg["role"]
        out.append(_message("tool-response" if role == "tool" else role, msg["text"]))
        if role != "assistant":
            continue
        if "raw_tool_calls" in msg:
            out.append(_message("tool-call", msg["raw_tool_calls"]))
        elif msg.get("tool_calls"):
            listing = [{"id": c["id"], "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]}}
                       for c in msg["tool_calls"]]
            out.append(_message("tool-call", _CALLING + repr(listing)))
    result: dict[str, Any] = {"messages": out}
    if tools is not None:
        result["tools"] = tools
    return result
