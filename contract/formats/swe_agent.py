"""SWE-agent `.traj` files: `history` and/or `trajectory` exactly as SWE-agent writes them (older shape:
{role, content, agent, thought, action, is_demo}; newer: + `message_type`, OpenAI-shaped `tool_calls`
on assistant turns and `tool_call_ids` lists on tool turns). The file's other fields (`info`,
`environment`, `replay_config`) may come along; they are not read (the raw payload keeps them).

Canonical rules:
- `history` wins when present; it is required unless `trajectory` is given.
- history items: role system|user|assistant|tool; `content` a string, null or text parts joined
  with "\\n". `agent`, `thought`, `action`, `message_type`, `tags`, `cache_control` are not read
  (`thought`/`action` repeat the content). `is_demo: true` → `"loss": false` (demonstrations are
  never trained and get no spans).
- assistant: text = the reasoning of `thinking_blocks` (Claude extended thinking, as litellm
  returns it: "<think>\\n" + the `thinking` texts joined by "\\n" + "\\n</think>\\n"; the blocks
  are kept verbatim as `thinking_blocks`, signatures and redacted blocks included) + content, then
  (when `tool_calls` is non-empty) "\\n" (if the content is non-empty) and the Hermes blocks of
  the calls joined by "\\n", as in `openai`; calls kept as `tool_calls: [{id, name, arguments,
  raw_arguments?}]` with `calls_at`.
- tool: `tool_call_ids` (a list; `tool_call_id` is read too) must name calls of earlier assistant
  messages (else 422 `unknown_tool_call_id`); one id is kept as `tool_call_id`, several as
  `tool_call_ids`.
- environment replies: every user message after the first trained assistant message is an
  observation (`"observation": true`): SWE-agent sends command output, format-error feedback and
  the submission back as user turns (marked `message_type: "observation"` in newer files; the issue
  text before the first action is marked so too, but it is the task, so it stays context).
  Observation and tool text is never trained: NUL and lone surrogates there become U+FFFD.
- `trajectory` alone: each step → an assistant message with its `response` (plus, when the step's
  `action` is not in the response — function-calling runs keep the call outside it — the action as a
  fenced block "\\n\\n```\\n" + action + "\\n```"), then a user message with its `observation`.
- auto spans: every trained assistant message is a text-command step (`segment`): prose → reason,
  the final fenced or `<command>` block → action (no block → all reason); with tool calls the free
  text → reason and each block → action. Observations and tool messages → observation.
Export writes `history` with role, content, `message_type` (system_prompt / demonstration / action /
observation), `is_demo`, `thinking_blocks`, `tool_calls` (OpenAI shape, arguments as received) and
`tool_call_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contract.formats.base import (
    ParsedTrajectory,
    content_text,
    fail,
    observation_content,
    openai_arguments,
    opt_str,
    parse_arguments,
    render_calls,
    req_dict,
    req_list,
    req_role,
    req_str,
    split_calls,
)
from contract.formats.jsonvalue import UNSTORABLE_JSON, is_json_value
from contract.formats.segment import Piece, auto_spans, free_text_spans, hermes_assistant_spans
from contract.spans import Message, Role, ToolCall

MARKS_OBSERVATION_USERS = True  # export writes the marks itself (contract.formats.export)
_ROLES: dict[str, Role] = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _call(raw: Any, field: str) -> ToolCall:
    req_dict(raw, field)
    if raw.get("type", "function") != "function":
        fail(f"{field}.type", "invalid_tool_call", f"only 'function' tool calls are supported, got {raw['type']!r}")
    fn = req_dict(raw.get("function"), f"{field}.function")
    name = req_str(fn.get("name"), f"{field}.function.name")
    if not name:
        fail(f"{field}.function.name", "invalid_tool_call", "must not be empty")
    if "arguments" not in fn:
        fail(f"{field}.function.arguments", "missing_field", "is required")
    given = fn["arguments"]
    call: ToolCall = {"id": opt_str(raw.get("id"), f"{field}.id"), "name": name,
                      "arguments": parse_arguments(given, f"{field}.function.arguments")}
    if isinstance(given, str):
        call["raw_arguments"] = given
    return call


def _thinking_blocks(value: Any, field: str) -> list[dict[str, Any]]:
    """`thinking_blocks` as given (a list of objects; a `thinking` block's text must be a string)."""
    if value is None:
        return []
    if not isinstance(value, list):
        fail(field, "invalid_type", "must be an array of thinking blocks")
    for k, block in enumerate(value):
        req_dict(block, f"{field}[{k}]")
        if block.get("type") == "thinking":
            req_str(block.get("thinking"), f"{field}[{k}].thinking")
        elif not is_json_value(block):
            fail(f"{field}[{k}]", "invalid_value", UNSTORABLE_JSON)
    return value


def think_prefix(blocks: list[dict[str, Any]]) -> str:
    """The reasoning that `thinking_blocks` put before the content: "<think>\\n" + the thinking texts
    joined by "\\n" + "\\n</think>\\n", or "" when there is none."""
    texts = [b["thinking"] for b in blocks if b.get("type") == "thinking" and b.get("thinking")]
    return "<think>\n" + "\n".join(texts) + "\n</think>\n" if texts else ""


def _tool_ids(item: dict[str, Any], f: str, known: set[str]) -> list[str]:
    """The call ids a tool turn answers (`tool_call_ids`, else `tool_call_id`), each checked."""
    if item.get("tool_call_ids") is not None:
        ids, field = item["tool_call_ids"], f"{f}.tool_call_ids"
        if not isinstance(ids, list):
            fail(field, "invalid_type", "must be an array of call ids")
        fields = [f"{field}[{k}]" for k in range(len(ids))]
    elif item.get("tool_call_id") is not None:
        ids, fields = [item["tool_call_id"]], [f"{f}.tool_call_id"]
    else:
        return []
    for call_id, field in zip(ids, fields, strict=True):
        if req_str(call_id, field) not in known:
            fail(field, "unknown_tool_call_id", f"{call_id!r} matches no tool call of an earlier assistant message")
    return ids


def _from_history(history: list[Any]) -> tuple[list[Message], list[list[int]], int]:
    messages: list[Message] = []
    block_lens: list[list[int]] = []
    known: set[str] = set()
    sanitized, acted = 0, False
    for i, item in enumerate(history):
        f = f"history[{i}]"
        req_dict(item, f)
        role = _ROLES[req_role(item.get("role"), _ROLES, f"{f}.role")]
        demo = item.get("is_demo") is True
        lens: list[int] = []
        if role == "assistant":
            blocks_in = _thinking_blocks(item.get("thinking_blocks"), f"{f}.thinking_blocks")
            content = content_text(item.get("content"), f"{f}.content")
            text = think_prefix(blocks_in) + content
            msg: Message = {"role": "assistant", "text": text}
            if blocks_in:
                msg["thinking_blocks"] = blocks_in
            raw_calls = item.get("tool_calls")
            if raw_calls is not None and not isinstance(raw_calls, list):
                fail(f"{f}.tool_calls", "invalid_type", "must be an array of tool calls")
            if raw_calls:
                calls = [_call(c, f"{f}.tool_calls[{k}]") for k, c in enumerate(raw_calls)]
                blocks, lens = render_calls(calls, f"{f}.tool_calls")
                text += "\n" if content else ""
                msg["text"], msg["tool_calls"], msg["calls_at"] = text + blocks, calls, len(text)
                known.update(c["id"] for c in calls if c["id"] is not None)
            acted = acted or not demo
        elif role == "tool" or (role == "user" and acted and not demo):
            text, n = observation_content(item.get("content"), f"{f}.content")
            sanitized += n
            msg = {"role": role, "text": text}
            if role == "user":
                msg["observation"] = True
            ids = _tool_ids(item, f, known) if role == "tool" else []
            if len(ids) == 1:
                msg["tool_call_id"] = ids[0]
            elif ids:
                msg["tool_call_ids"] = ids
        else:
            msg = {"role": role, "text": content_text(item.get("content"), f"{f}.content")}
        if demo:
            msg["loss"] = False
        messages.append(msg)
        block_lens.append(lens)
    return messages, block_lens, sanitized


def _from_trajectory(steps: list[Any]) -> tuple[list[Message], list[list[int]], int]:
    messages: list[Message] = []
    sanitized = 0
    for i, step in enumerate(steps):
        f = f"trajectory[{i}]"
        req_dict(step, f)
        text = req_str(step.get("response"), f"{f}.response")
        action = opt_str(step.get("action"), f"{f}.action")
        if action and action.strip() and action.strip() not in text:
            text += "\n\n```\n" + action.strip("\n") + "\n```"
        observation, n = observation_content(step.get("observation"), f"{f}.observation")
        sanitized += n
        messages += [{"role": "assistant", "text": text}, {"role": "user", "text": observation, "observation": True}]
    return messages, [[] for _ in messages], sanitized


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    if payload.get("history") is not None or payload.get("trajectory") is None:
        messages, block_lens, sanitized = _from_history(req_list(payload.get("history"), "history"))
    else:
        messages, block_lens, sanitized = _from_trajectory(req_list(payload.get("trajectory"), "trajectory"))

    def segment(i: int, text: str, final: bool) -> list[Piece]:
        if block_lens[i]:
            return hermes_assistant_spans(text, block_lens[i], final=False)
        return free_text_spans(text, 0, len(text), final=False, commands=True)

    return ParsedTrajectory(messages=messages, spans=auto_spans(messages, segment), sanitized=sanitized)


def _message_type(msg: Message) -> str:
    if msg.get("loss") is False:
        return "demonstration"
    return {"system": "system_prompt", "assistant": "action"}.get(msg["role"], "observation")


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    history: list[dict[str, Any]] = []
    for msg in messages:
        item: dict[str, Any] = {"role": msg["role"], "content": msg["text"], "message_type": _message_type(msg)}
        if msg.get("loss") is False:
            item["is_demo"] = True
        if msg["role"] == "assistant":
            _, calls = split_calls(msg)
            head = msg["text"][: msg.get("calls_at", len(msg["text"])) if calls else None]
            thinking = msg.get("thinking_blocks") or []
            prefix = think_prefix(thinking)
            if thinking:
                item["thinking_blocks"] = thinking
            head = head[len(prefix):] if head.startswith(prefix) else head
            item["content"] = head[:-1] if calls and head.endswith("\n") else head
            if calls:
                item["tool_calls"] = [
                    {**({"id": c["id"]} if c["id"] is not None else {}), "type": "function",
                     "function": {"name": c["name"], "arguments": openai_arguments(c)}} for c in calls]
        elif "tool_call_id" in msg:
            item["tool_call_ids"] = [msg["tool_call_id"]]
        elif "tool_call_ids" in msg:
            item["tool_call_ids"] = list(msg["tool_call_ids"])
        history.append(item)
    return {"history": history}
