"""OpenAI chat format: `messages` (+ `tools`) as the Chat Completions API and its logs write them.

Canonical rules:
- roles system|developer (→ system), user, assistant, tool, function (legacy → tool); unknown keys
  are ignored. `content` is a string, null (→ "") or a list of {"type": "text", "text"} parts
  joined with "\\n"; other part types are rejected.
- assistant text = ("<think>\\n" + reasoning + "\\n</think>\\n" when `reasoning_content`, else
  `reasoning`, is a non-empty string) + content + ("\\n" when content is non-empty and there are
  tool calls) + the Hermes blocks of the tool calls joined by "\\n". `tool_calls` entries are
  {id, type: "function", function: {name, arguments}}; `arguments` is parsed when it is a JSON
  string (kept as the raw string when it does not parse; an object is taken as is). Legacy
  `function_call` {name, arguments} becomes one call with id None. Kept as
  `tool_calls: [{id, name, arguments, raw_arguments?}]` (present only when non-empty;
  `raw_arguments` = the `arguments` string exactly as received) and `calls_at` = where the blocks
  start in the text.
- tool messages keep `tool_call_id` (must match a call id of an earlier assistant message) and `name`.
- never-trained text is sanitized, not refused (`base.observation_content`): the content of tool
  messages and of user messages that feed an observation back (their own mark, or the request's
  `observation_role`); NUL and lone surrogates there become U+FFFD and are counted in `sanitized`.
- auto spans: see `base` — reasoning block → reason, free text → reason (action when the message
  has no tool calls and is last or followed by a user/system message: the final answer; ReAct-style
  free text is segmented by its labels), each tool-call block → action, tool → observation, user
  text starting with "Observation:" → observation.
Export writes everything as `content` (reasoning stays inline in the text), tool calls in OpenAI
shape read back from the stored structure (`base.split_calls`: `arguments` as received, key order
included), and `tools` as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contract.formats.base import (
    ParsedTrajectory,
    content_text,
    fail,
    is_text,
    observation_content,
    openai_arguments,
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
from contract.formats.segment import (
    auto_spans,
    hermes_assistant_spans,
    is_observation_user,
)
from contract.spans import Message, Role, ToolCall

__all__ = ["export", "parse", "split_calls"]  # split_calls: re-exported for the exporters that import it here

_ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                           "tool": "tool", "function": "tool"}


def _call(raw: Any, field: str, *, legacy: bool) -> ToolCall:
    # Field paths are built only on the way to an error (is_text); the checkers then word it.
    req_dict(raw, field)
    if legacy:
        fn, call_id = raw, None
    else:
        kind = raw.get("type", "function")
        if kind != "function":
            fail(f"{field}.type", "invalid_tool_call",
                 f"only 'function' tool calls are supported, got {kind!r}")
        call_id = raw.get("id")
        if call_id is not None and not is_text(call_id):
            req_str(call_id, f"{field}.id")
        fn = raw.get("function")
        if not isinstance(fn, dict):
            if fn is None:
                fail(f"{field}.function", "missing_field", "is required")
            req_dict(fn, f"{field}.function")
    fn_field = field if legacy else f"{field}.function"
    name = fn.get("name")
    if not name or not is_text(name):
        req_str(name, f"{fn_field}.name")
        fail(f"{fn_field}.name", "invalid_tool_call", "must not be empty")
    if "arguments" not in fn:
        fail(f"{fn_field}.arguments", "missing_field", "is required")
    given = fn["arguments"]
    call: ToolCall = {"id": call_id, "name": name, "arguments": parse_arguments(given, f"{fn_field}.arguments")}
    if isinstance(given, str):
        call["raw_arguments"] = given
    return call


def _str_field(m: dict[str, Any], key: str, f: str) -> str | None:
    """``opt_str(m.get(key), f"{f}.{key}")``, the path built only for an error."""
    value = m.get(key)
    if value is None or is_text(value):
        return value
    return opt_str(value, f"{f}.{key}")


def _assistant(m: dict[str, Any], f: str) -> tuple[Message, list[int]]:
    given = m.get("content")
    content: str = given if is_text(given) else content_text(given, f"{f}.content")
    reasoning = _str_field(m, "reasoning_content", f) or _str_field(m, "reasoning", f)
    raw_calls, legacy = m.get("tool_calls"), m.get("function_call")
    if raw_calls is not None and not isinstance(raw_calls, list):
        fail(f"{f}.tool_calls", "invalid_type", "must be an array of tool calls")
    if raw_calls and legacy is not None:
        fail(f"{f}.function_call", "conflicting_fields", "give either tool_calls or function_call, not both")
    if raw_calls:
        calls = [_call(c, f"{f}.tool_calls[{k}]", legacy=False) for k, c in enumerate(raw_calls)]
    elif legacy is not None:
        calls = [_call(legacy, f"{f}.function_call", legacy=True)]
    else:
        calls = []
    text = ("<think>\n" + reasoning + "\n</think>\n" if reasoning else "") + content
    msg: Message = {"role": "assistant", "text": text}
    if not calls:
        return msg, []
    blocks, lens = render_calls(calls, f"{f}.tool_calls")
    text += "\n" if content else ""
    msg["text"], msg["tool_calls"], msg["calls_at"] = text + blocks, calls, len(text)
    return msg, lens


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    raw_messages = req_list(payload.get("messages"), "messages")
    tools = parse_tools(payload.get("tools"), "tools")
    messages: list[Message] = []
    block_lens: list[list[int]] = []
    call_ids: set[str] = set()
    sanitized = 0
    unmarked: list[tuple[int, Any, str]] = []  # sanitized user turns, strict unless they are observations
    for i, m in enumerate(raw_messages):
        f = f"messages[{i}]"
        req_dict(m, f)
        role = m.get("role")
        if type(role) is not str or role not in _ROLES:
            req_role(role, _ROLES, f"{f}.role")
        lens: list[int] = []
        if role == "assistant":
            msg, lens = _assistant(m, f)
            call_ids.update(c["id"] for c in msg.get("tool_calls", ()) if c["id"] is not None)
        else:
            text = m.get("content")
            n = 0
            if not is_text(text):
                text, n = observation_content(text, f"{f}.content")
            if n and role in ("system", "developer"):
                content_text(m.get("content"), f"{f}.content")  # context text: strict
            if n and role == "user":
                unmarked.append((len(messages), m.get("content"), f"{f}.content"))
            sanitized += n
            msg = {"role": _ROLES[role], "text": text}
            if msg["role"] == "tool":
                call_id = _str_field(m, "tool_call_id", f)
                if call_id is not None:
                    if call_id not in call_ids:
                        fail(f"{f}.tool_call_id", "unknown_tool_call_id",
                             f"{call_id!r} matches no tool call of an earlier assistant message")
                    msg["tool_call_id"] = call_id
                name = _str_field(m, "name", f)
                if name is not None:
                    msg["name"] = name
        messages.append(msg)
        block_lens.append(lens)
    spans = auto_spans(messages, lambda i, text, final: hermes_assistant_spans(text, block_lens[i], final))
    for i, content, field in unmarked:  # the segmenter has marked the observation user turns by now
        if not is_observation_user(messages[i]):
            content_text(content, field)
    return ParsedTrajectory(messages=messages, spans=spans, tools=tools, sanitized=sanitized)


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg["role"]
        if role != "assistant":
            item: dict[str, Any] = {"role": role, "content": msg["text"]}
            if role == "tool":
                for key in ("tool_call_id", "name"):
                    if key in msg:
                        item[key] = msg[key]
            out.append(item)
            continue
        free, calls = split_calls(msg)
        item = {"role": "assistant", "content": free if free or not calls else None}
        if calls:
            item["tool_calls"] = [
                {**({"id": c["id"]} if c["id"] is not None else {}), "type": "function",
                 "function": {"name": c["name"], "arguments": openai_arguments(c)}}
                for c in calls
            ]
        out.append(item)
    result: dict[str, Any] = {"messages": out}
    if tools is not None:
        result["tools"] = tools
    return result
