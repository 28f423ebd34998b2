"""The checks OpenAI's fine-tuning file validation makes on a chat-format line, written down so the
dataset export can be tested against them (no network: we cannot upload a file in a test).

Sources: the format checks of OpenAI's cookbook "Chat fine-tuning data prep" notebook (data_type,
missing_messages_list, message_missing_key, message_unrecognized_key, unrecognized_role,
missing_content, example_missing_assistant_message) extended for the tool-calling shape that the
fine-tuning guide documents (``tools``, assistant ``tool_calls`` with ``arguments`` a JSON string,
``tool`` messages answering a call by ``tool_call_id``, ``weight`` 0/1 on assistant messages).
`openai_line_errors` returns one string per problem ([] when the line passes).
"""

from __future__ import annotations

import json
from typing import Any

_KEYS = {"system": {"role", "content", "name"}, "user": {"role", "content", "name"},
         "assistant": {"role", "content", "name", "tool_calls", "weight"},
         "tool": {"role", "content", "tool_call_id"}}


def _call_errors(call: Any, where: str, seen: set[str]) -> list[str]:
    if not isinstance(call, dict) or set(call) != {"id", "type", "function"}:
        return [f"{where}: a call is exactly {{id, type, function}}"]
    errors = []
    if not isinstance(call["id"], str) or not call["id"]:
        errors.append(f"{where}.id: must be a non-empty string")
    elif call["id"] in seen:
        errors.append(f"{where}.id: {call['id']!r} is used twice in the line")
    else:
        seen.add(call["id"])
    if call["type"] != "function":
        errors.append(f"{where}.type: must be 'function'")
    fn = call["function"]
    if not isinstance(fn, dict) or set(fn) != {"name", "arguments"}:
        return [*errors, f"{where}.function: must be exactly {{name, arguments}}"]
    if not isinstance(fn["name"], str) or not fn["name"]:
        errors.append(f"{where}.function.name: must be a non-empty string")
    if not isinstance(fn["arguments"], str):
        errors.append(f"{where}.function.arguments: must be a string")
    else:
        try:
            json.loads(fn["arguments"])
        except ValueError:
            errors.append(f"{where}.function.arguments: must be JSON text")
    return errors


def openai_line_errors(line: Any) -> list[str]:
    """Every problem OpenAI's fine-tuning validation would report for one chat-format line."""
    if not isinstance(line, dict):
        return ["data_type: a line must be an object"]
    errors = [f"unrecognized key {k!r}" for k in line if k not in ("messages", "tools", "parallel_tool_calls")]
    messages = line.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*errors, "missing_messages_list"]
    tools = line.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(
            isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
            for t in tools)):
        errors.append("tools: must be a list of {type: 'function', function: {...}}")
    seen: set[str] = set()
    pending: set[str] = set()  # calls of the assistant message just before that no tool message answered yet
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in _KEYS:
            errors.append(f"{where}: unrecognized_role {m.get('role') if isinstance(m, dict) else m!r}")
            pending = set()
            continue
        role, content = m["role"], m.get("content")
        if "role" not in m or "content" not in m:
            errors.append(f"{where}: message_missing_key (role and content)")
        errors += [f"{where}: message_unrecognized_key {k!r}" for k in m if k not in _KEYS[role]]
        if role == "tool":
            if not isinstance(content, str):
                errors.append(f"{where}.content: must be a string")
            cid = m.get("tool_call_id")
            if cid not in pending:
                errors.append(f"{where}.tool_call_id: {cid!r} answers no pending call of the assistant message "
                              "before it")
            pending.discard(cid)
            continue
        pending = set()
        if role == "assistant":
            calls = m.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    errors.append(f"{where}.tool_calls: must be a non-empty list")
                else:
                    for k, call in enumerate(calls):
                        errors += _call_errors(call, f"{where}.tool_calls[{k}]", seen)
                        if isinstance(call, dict) and isinstance(call.get("id"), str):
                            pending.add(call["id"])
            if not (isinstance(content, str) and content) and not calls:
                errors.append(f"{where}: missing_content (an assistant message needs content or tool_calls)")
            if content is not None and not isinstance(content, str):
                errors.append(f"{where}.content: must be a string or null")
            if "weight" in m and (m["weight"] not in (0, 1) or isinstance(m["weight"], bool)):
                errors.append(f"{where}.weight: must be 0 or 1")
        elif not isinstance(content, str) or not content:
            errors.append(f"{where}: missing_content")
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        errors.append("example_missing_assistant_message")
    return errors
