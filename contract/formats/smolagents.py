"""smolagents step logs (CodeAgent and ToolCallingAgent): `messages` with roles system/user/assistant/
tool-call/tool-response (content a string, null, or {"type": "text", "text"} parts joined with "\\n"),
optional `task` and `tools`.

Canonical rules:
- system, user → themselves; tool-response → tool (errors included); assistant → assistant, text exact.
  Tool-response text is never trained: NUL and lone surrogates there become U+FFFD (`sanitized`).
- tool-call messages repeat the assistant's code, so they are not messages of their own: they attach
  to the assistant message just before them. Content "Calling tools:\\n" + a Python-repr list of
  {id, type, function: {name, arguments}} is read with ast.literal_eval into
  `tool_calls: [{id, name, arguments}]`; any other content is kept verbatim as `raw_tool_calls`
  (a string). A tool-call with no assistant message before it (or a second one for the same
  message) gets a new assistant message with empty text. The calls are not rendered into the text
  when the text already shows the action (CodeAgent code, smolagents' call lines, a ReAct
  "Action:" line); otherwise — ToolCallingAgent steps of smolagents ≤ 1.13 and ≥ 1.21, whose text
  is empty or only the model's prose — they are rendered as Hermes blocks after the text and a
  "\\n" (`calls_at`, as in `openai`): the call is the step's action, and training must see it.
- `task` becomes a user message (after the leading system messages) only when the log has none.
- auto spans in assistant texts. ToolCallingAgent steps: smolagents writes its own line for each
  call into the step text ("Called Tool: 'x' with arguments: {…}" in 1.14–1.17, "Tool call <id>:
  calling 'x' with arguments: {…}" lines in 1.18–1.20, right after the model's own text): from the
  first such line to the end → action, the model's text before it → reason. CodeAgent steps: the
  action starts at the first line starting with "Code:", else at the last code-block opener at line
  start ("```py", "```python", "<code>"); it ends after the first "<end_code>" after it, else (a
  "<code>" opener) after the first "</code>", else (a fence) after the closing "```" at a line start
  plus a "</code>" right after it, else at the end of the text. Text before the action (the
  Thought) → reason; trailing whitespace joins the action, other trailing text → reason. Code
  calling final_answer(...) is an action like any other. A step with no code (smolagents answers
  it with a parsing error): ReAct labels with an "Action" or "Final Answer" line → their spans
  (`segment.label_spans`); a single line ending with "</code>" — a bare answer the model closed as
  code ("Guava</code>", "Final Answer: 1537</code>") — → action; anything else → reason. Rendered
  call blocks → one action span each, the text before them → reason.
  tool-response → observation; user text starting with "Observation:" → observation.
Export writes content as one text part (without rendered call blocks), and a tool-call message after
each assistant that had calls.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from contract.formats.base import (
    ParsedTrajectory,
    content_text,
    observation_content,
    opt_str,
    parse_tools,
    render_calls,
    req_dict,
    req_list,
    req_role,
    split_calls,
)
from contract.formats.jsonvalue import is_json_value
from contract.formats.segment import (
    Piece,
    auto_spans,
    find_labels,
    hermes_assistant_spans,
    label_spans,
)
from contract.spans import Message, Role, SpanKind, ToolCall

# Log role → canonical role; a tool-call log message attaches to the assistant message before it.
_ROLES: dict[str, Role | None] = {"system": "system", "user": "user", "assistant": "assistant", "tool-call": None,
                                  "tool-response": "tool"}
_CALLING = "Calling tools:\n"
_CODE_LABEL = re.compile(r"^Code:", re.M)
_CODE_OPEN = re.compile(r"^[ \t]*(?:```(?:py|python)[ \t]*$|<code>)", re.M)
_FENCE_CLOSE = re.compile(r"^[ \t]*```", re.M)
_CALL_LINE = re.compile(
    r"Called Tool: '[^'\n]*' with arguments: |Tool call [^\s:]+: calling '[^'\n]*' with arguments: ")


def step_spans(text: str) -> list[Piece]:
    """Spans of one assistant step: ToolCallingAgent call lines, ReAct action blobs, or CodeAct code."""
    call = _CALL_LINE.search(text)
    if call is not None:
        return ([(0, call.start(), SpanKind.REASON)] if call.start() else []) + [
            (call.start(), len(text), SpanKind.ACTION)]
    return codeact_spans(text)


def _no_code_spans(text: str) -> list[Piece]:
    """A step with no code (smolagents answered it with a parsing error): see the module docstring."""
    labels = find_labels(text)
    if any(name in ("Action", "Final Answer") for _, _, name in labels):
        return label_spans(text, 0, len(text), labels)
    if text.rstrip().endswith("</code>") and "\n" not in text.strip():
        return [(0, len(text), SpanKind.ACTION)]  # a bare answer the model closed as code
    return [(0, len(text), SpanKind.REASON)]


def _code_end(text: str, opener: re.Match[str] | None, start: int) -> int:
    """Where the action that starts at `start` ends (see the module docstring)."""
    end = text.find("<end_code>", start)
    if end >= 0:
        return end + len("<end_code>")
    if opener is None or opener.group().strip() == "<code>":
        close = text.find("</code>", start)
        return close + len("</code>") if close >= 0 else len(text)
    fence = _FENCE_CLOSE.search(text, opener.end())
    if fence is None:
        return len(text)
    return fence.end() + len("</code>") if text.startswith("</code>", fence.end()) else fence.end()


def codeact_spans(text: str) -> list[Piece]:
    """Reason for the Thought, action for "Code:" and the code block (see the module docstring)."""
    label = _CODE_LABEL.search(text)
    if label is not None:
        start, opener = label.start(), _CODE_OPEN.search(text, label.end())
    else:
        openers = list(_CODE_OPEN.finditer(text))
        if not openers:
            return _no_code_spans(text)
        opener = openers[-1]
        start = opener.start()
    end = _code_end(text, opener, start)
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
    rendered: dict[int, list[int]] = {}  # id(assistant message) → lengths of the call blocks rendered into it
    sanitized = 0
    for i, m in enumerate(raw_messages):
        f = f"messages[{i}]"
        req_dict(m, f)
        role = req_role(m.get("role"), _ROLES, f"{f}.role")
        if role == "tool-response":
            text, n = observation_content(m.get("content"), f"{f}.content")
            sanitized += n
        else:
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
                if not _shows_action(prev["text"]):
                    blocks, rendered[id(prev)] = render_calls(calls, f"{f}.content")
                    free = prev["text"] + ("\n" if prev["text"] else "")
                    prev["text"], prev["calls_at"] = free + blocks, len(free)
        else:
            messages.append({"role": canonical, "text": text})
    if task is not None and not any(m["role"] == "user" for m in messages):
        at = next((k for k, m in enumerate(messages) if m["role"] != "system"), len(messages))
        messages.insert(at, {"role": "user", "text": task})

    def segment(i: int, text: str, final: bool) -> list[Piece]:
        lens = rendered.get(id(messages[i]))
        return hermes_assistant_spans(text, lens, final=False) if lens else step_spans(text)

    return ParsedTrajectory(messages=messages, spans=auto_spans(messages, segment), tools=tools, sanitized=sanitized)


def _shows_action(text: str) -> bool:
    """Whether a step's text holds its action (call lines, code, a ReAct Action line)."""
    if _CALL_LINE.search(text) or _CODE_LABEL.search(text) or _CODE_OPEN.search(text):
        return True
    return any(name == "Action" for _, _, name in find_labels(text))


def _message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg["role"]
        free, calls = split_calls(msg) if "calls_at" in msg else (msg["text"], msg.get("tool_calls") or [])
        out.append(_message("tool-response" if role == "tool" else role, free))
        if role != "assistant":
            continue
        if "raw_tool_calls" in msg:
            out.append(_message("tool-call", msg["raw_tool_calls"]))
        elif calls:
            listing = [{"id": c["id"], "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
            out.append(_message("tool-call", _CALLING + repr(listing)))
    result: dict[str, Any] = {"messages": out}
    if tools is not None:
        result["tools"] = tools
    return result
