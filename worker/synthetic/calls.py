"""Read a student's tool calls in its own family's syntax, as a serving stack's tool parser would.

A student trained with ``tool_call_syntax: native`` writes calls the way its chat template renders them
(`worker.training.native`); `student_call_syntax` names that syntax from the template itself (rendering one probe
call), and `parse_calls` reads it:

- ``hermes`` (Qwen2.5/3, the canonical form, every fallback): ``<tool_call>`` JSON ``{"name", "arguments"}``
  ``</tool_call>`` blocks; a turn without one is the final answer; an unclosed block is malformed.
- ``llama3_json`` (Llama 3.x): the turn is a bare JSON object ``{"name", "parameters"}`` (several separated by
  ``;``), optionally after ``<|python_tag|>``; a turn that does not start with ``{`` is the final answer.

Each call is ``(name, arguments)`` or an "Error: …" observation for a malformed one.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

CallSyntax = Literal["hermes", "llama3_json"]
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_PYTHON_TAG = "<|python_tag|>"


@dataclass
class ParsedTurn:
    """One assistant turn read in a call syntax: its calls, or none (a final answer)."""

    content: str
    calls: list[tuple[str, Any] | str] = field(default_factory=list)  # (name, arguments) or an error observation


def _call(obj: Any, args_key: str) -> tuple[str, Any] | str:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return f'Error: tool call needs {{"name": <tool>, "{args_key}": {{...}}}}'
    arguments = obj.get(args_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(arguments, str):  # OpenAI-style arguments given as a JSON string
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    return obj["name"], arguments


def _hermes(text: str) -> ParsedTurn:
    bodies: list[str | None] = list(_TOOL_CALL.findall(text))
    # An opening tag left unclosed (e.g. generation hit its token limit) is a malformed call too.
    if text.count("<tool_call>") > len(bodies):
        bodies.append(None)
    first = text.find("<tool_call>")
    turn = ParsedTurn(text if first < 0 else text[:first].rstrip())
    for body in bodies:
        if body is None:
            turn.calls.append("Error: unterminated <tool_call> block")
            continue
        try:
            turn.calls.append(_call(json.loads(body.strip()), "arguments"))
        except ValueError:
            turn.calls.append("Error: tool call is not valid JSON")
    return turn


def _llama3_json(text: str) -> ParsedTurn:
    body = text.strip()
    body = body[len(_PYTHON_TAG):].lstrip() if body.startswith(_PYTHON_TAG) else body
    if not body.startswith("{"):
        return ParsedTurn(text)
    turn = ParsedTurn("")
    decoder, pos = json.JSONDecoder(), 0
    while pos < len(body):
        try:
            obj, pos = decoder.raw_decode(body, pos)
        except ValueError:
            turn.calls.append("Error: tool call is not valid JSON")
            break
        turn.calls.append(_call(obj, "parameters"))
        while pos < len(body) and (body[pos].isspace() or body[pos] == ";"):
            pos += 1
    return turn


def parse_calls(text: str, syntax: CallSyntax = "hermes") -> ParsedTurn:
    """The calls of one assistant turn written in `syntax` (see the module docstring)."""
    if syntax == "hermes":
        return _hermes(text)
    if syntax == "llama3_json":
        return _llama3_json(text)
    raise ValueError(f"unknown call syntax {syntax!r}")


def student_call_syntax(tokenizer: Any, tool_call_syntax: str = "native") -> CallSyntax:
    """The syntax a student trained with `tool_call_syntax` writes calls in: its template's own when it renders
    structured calls natively (read from a probe render), else the canonical ``hermes``."""
    if tool_call_syntax != "native" or not getattr(tokenizer, "chat_template", None):
        return "hermes"
    from worker.training.native import native_support
    from worker.training.template import RenderError, apply_template

    support = native_support(tokenizer)
    if not support.calls:
        return "hermes"
    args = {"probe_arg": "probe_value"}
    call = {"id": "call_probe", "type": "function",
            "function": {"name": "probe_fn", "arguments": json.dumps(args) if support.string_arguments else args}}
    try:
        out = apply_template(tokenizer, [{"role": "user", "content": "q"},
                                         {"role": "assistant", "content": None if support.null_content else "",
                                          "tool_calls": [call]}], None)
    except RenderError:
        return "hermes"
    if "<tool_call>" in out:
        return "hermes"
    if '{"name": "probe_fn", "parameters": ' in out:
        return "llama3_json"
    raise ValueError("the student's chat template writes tool calls in a syntax the runner cannot read; "
                     "train it with tool_call_syntax='hermes'")
