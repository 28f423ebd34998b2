"""Shared pieces of the trajectory format layer: the error and result types, checked access to
request fields (every failure is a `FormatError` naming a path into the request), the Hermes
rendering of tool calls and reading them back (`split_calls`), and the sanitizing of text that is
never trained. The rule-based segmenter that proposes auto spans is in `segment`.

Sanitize, don't refuse: text that is never trained (tool output, observations) goes through
`observation_text` / `observation_content`, which replace NUL and lone surrogates (what Postgres
cannot store) by U+FFFD and count them; a parser adds the counts to `ParsedTrajectory.sanitized`,
which the API's receipt reports. Everything else (`req_str`, `content_text`) stays strict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn, TypeGuard

from contract.formats.jsonvalue import UNSTORABLE_JSON, is_json_value, json_text, try_json
from contract.pglimits import UNSTORABLE, unstorable_at
from contract.spans import Message, Span, ToolCall
from contract.validation import FieldError

_UNSTORABLE = UNSTORABLE  # NUL and lone UTF-16 surrogates: Postgres stores neither in text or jsonb


class FormatError(ValueError):
    """A payload that cannot be parsed; `errors` = [{"field", "code", "message"}] (first problem found)."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass
class ParsedTrajectory:
    """Canonical messages, their auto spans, the tool definitions (None when absent), and how many
    characters of never-trained text were replaced by U+FFFD (`sanitize`)."""

    messages: list[Message]
    spans: list[Span]
    tools: list[Any] | None = None
    sanitized: int = 0


def fail(field: str, code: str, message: str) -> NoReturn:
    raise FormatError([{"field": field, "code": code, "message": message}])


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def refuse_character(value: str, offset: int, field: str) -> NoReturn:
    """The error for the unstorable character at value[offset] in text that is not sanitized."""
    what = "U+0000 (NUL)" if value[offset] == "\x00" else "a lone UTF-16 surrogate"
    fail(field, "invalid_character", f"contains {what} at offset {offset}, which cannot be stored")


def _check_chars(value: str, field: str) -> str:
    at = unstorable_at(value)
    if at >= 0:
        refuse_character(value, at, field)
    return value


def req_str(value: Any, field: str) -> str:
    """A required string (missing → missing_field)."""
    if value is None:
        fail(field, "missing_field", "is required")
    if not isinstance(value, str):
        fail(field, "invalid_type", f"must be a string, got {json_type(value)}")
    return _check_chars(value, field)


def opt_str(value: Any, field: str) -> str | None:
    return None if value is None else req_str(value, field)


def is_text(value: Any) -> TypeGuard[str]:
    """A string ``req_str`` takes as is. A parser's fast path: only when this is False does it build the field's
    path and call the checker that refuses with it (the path of every field, built eagerly, costs more than
    the checks)."""
    if type(value) is not str:
        return False
    if value.isascii():  # unstorable_at's own fast path, inline: this runs for every string a parser keeps
        return "\x00" not in value
    return unstorable_at(value) < 0


def req_role(value: Any, allowed: Any, field: str) -> str:
    """A role name that must be one of `allowed` (missing → missing_field, other → unknown_role)."""
    if value is None:
        fail(field, "missing_field", f"is required (one of {', '.join(allowed)})")
    if not isinstance(value, str) or value not in allowed:
        fail(field, "unknown_role", f"must be one of {', '.join(allowed)}, got {value!r}")
    return value


def req_list(value: Any, field: str) -> list[Any]:
    """A required, non-empty array."""
    if value is None:
        fail(field, "missing_field", "is required")
    if not isinstance(value, list):
        fail(field, "invalid_type", f"must be an array, got {json_type(value)}")
    if not value:
        fail(field, "empty", "must not be empty")
    return value


def req_dict(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(field, "invalid_type", f"must be an object, got {json_type(value)}")
    return value


def sanitize(text: str) -> tuple[str, int]:
    """`text` with NUL and lone surrogates replaced by U+FFFD (same length), and how many were replaced."""
    if unstorable_at(text) < 0:
        return text, 0
    return _UNSTORABLE.subn("\ufffd", text)


def observation_text(value: Any, field: str) -> tuple[str, int]:
    """A required string that is never trained (tool output, an observation), sanitized: (text, replaced)."""
    if value is None:
        fail(field, "missing_field", "is required")
    if not isinstance(value, str):
        fail(field, "invalid_type", f"must be a string, got {json_type(value)}")
    return sanitize(value)


@dataclass(frozen=True)
class TextParts:
    """The content a format reads as text besides a string or null: a list of parts whose `type` is
    one of `types`, each holding its text under "text", joined by "\\n"; and how its errors word it
    (`expected` follows "must be"; `refused`, formatted with `kind=` a part's type, refuses the others)."""

    types: tuple[str, ...]
    expected: str
    refused: str


CHAT_TEXT_PARTS = TextParts(("text",), "a string, null or an array of text parts",
                            "only text parts are supported, got type {kind!r}")


def _content(content: Any, field: str, strict: bool, accept: TextParts = CHAT_TEXT_PARTS) -> tuple[str, int]:
    if content is None:
        return "", 0
    if isinstance(content, str):
        return (_check_chars(content, field), 0) if strict else sanitize(content)
    if not isinstance(content, list):
        fail(field, "invalid_type", f"must be {accept.expected}, got {json_type(content)}")
    texts, replaced = [], 0
    for k, part in enumerate(content):
        pf = f"{field}[{k}]"
        req_dict(part, pf)
        if part.get("type") not in accept.types:
            fail(f"{pf}.type", "unsupported_content", accept.refused.format(kind=part.get("type")))
        if strict:
            texts.append(req_str(part.get("text"), f"{pf}.text"))
        else:
            text, n = observation_text(part.get("text"), f"{pf}.text")
            texts.append(text)
            replaced += n
    return "\n".join(texts), replaced


def content_text(content: Any, field: str, accept: TextParts = CHAT_TEXT_PARTS) -> str:
    """Message content as text: a string, null (→ ""), or text parts joined with "\\n" (as vLLM does);
    `accept` says which part types hold text (OpenAI chat's "text" unless a format says otherwise)."""
    return _content(content, field, True, accept)[0]


def observation_content(content: Any, field: str, accept: TextParts = CHAT_TEXT_PARTS) -> tuple[str, int]:
    """`content_text` for text that is never trained, sanitized: (text, characters replaced)."""
    return _content(content, field, False, accept)


def parse_arguments(raw: Any, field: str) -> Any:
    """Tool-call arguments: a JSON string is parsed (kept raw when it does not parse); an object as is.
    (A caller keeps a string as received beside the value: `ToolCall.raw_arguments`.)"""
    if isinstance(raw, str):
        _check_chars(raw, field)
        ok, value = try_json(raw)
        if not ok:
            return raw
    elif isinstance(raw, dict):
        value = raw
    else:
        fail(field, "invalid_type", f"must be a JSON string or an object, got {json_type(raw)}")
    if not is_json_value(value):
        fail(field, "invalid_value", UNSTORABLE_JSON)
    return value


def export_arguments(value: Any) -> str:
    """The OpenAI `arguments` string that `parse_arguments` turns back into `value`."""
    if isinstance(value, str) and not try_json(value)[0]:
        return value
    return json_text(value)


def render_tool_call(name: str, arguments: Any, field: str = "tool_calls") -> str:
    """One Hermes/Qwen block: "<tool_call>\\n" + json.dumps({name, arguments}) + "\\n</tool_call>"."""
    try:
        body = json_text({"name": name, "arguments": arguments})
    except (ValueError, TypeError, RecursionError) as exc:
        fail(field, "invalid_value", f"cannot be rendered as JSON: {exc}")
    return "<tool_call>\n" + body + "\n</tool_call>"


def render_calls(calls: list[ToolCall], field: str = "tool_calls") -> tuple[str, list[int]]:
    """The Hermes blocks of `calls` joined by "\\n", and each block's length (for the segmenter)."""
    blocks = [render_tool_call(c["name"], c["arguments"], field) for c in calls]
    return "\n".join(blocks), [len(b) for b in blocks]


def _blocks_from(text: str, at: int, n: int) -> list[Any] | None:
    """The {"name", "arguments"} bodies of `n` Hermes blocks filling text[at:], in text order (each
    body is one line: JSON escapes newlines), or None when text[at:] is not exactly that."""
    lines = text[at:].split("\n")
    if len(lines) != 3 * n:
        return None
    bodies = []
    for k in range(n):
        if lines[3 * k] != "<tool_call>" or lines[3 * k + 2] != "</tool_call>":
            return None
        ok, body = try_json(lines[3 * k + 1])
        if not ok or not isinstance(body, dict) or "arguments" not in body:
            return None
        bodies.append(body)
    return bodies


def _legacy_calls_at(text: str, calls: list[ToolCall]) -> int | None:
    """Where the blocks start in a message stored before `calls_at` existed: the last 3 lines per call,
    when they are blocks naming the calls in order (smolagents messages, whose calls are not rendered,
    end otherwise)."""
    lines = text.split("\n")
    n = 3 * len(calls)
    if len(lines) < n:
        return None
    head = lines[: len(lines) - n]
    at = len("\n".join(head)) + 1 if head else 0
    bodies = _blocks_from(text, at, len(calls))
    if bodies is None or [b.get("name") for b in bodies] != [c["name"] for c in calls]:
        return None
    return at


def split_calls(msg: Message) -> tuple[str, list[ToolCall]]:
    """(free text, tool calls) of a canonical assistant message, read from its structure, never by
    re-rendering: the blocks start at `calls_at` and each call's `arguments` is read back from its
    block, so keys come in the order received whatever the database did to `tool_calls`
    (`raw_arguments` is kept). The free text drops the "\\n" that separates it from the blocks.
    Calls that are not rendered in the text (smolagents) give (text, [])."""
    text, calls = msg["text"], msg.get("tool_calls") or []
    if not calls:
        return text, []
    at = msg.get("calls_at")
    if not isinstance(at, int) or isinstance(at, bool):
        at = _legacy_calls_at(text, calls) if "calls_at" not in msg else None
    bodies = _blocks_from(text, at, len(calls)) if at is not None and 0 <= at <= len(text) else None
    if at is None or bodies is None:
        return text, []
    out: list[ToolCall] = []
    for call, body in zip(calls, bodies, strict=True):
        item: ToolCall = {"id": call["id"], "name": call["name"], "arguments": body["arguments"]}
        if "raw_arguments" in call:
            item["raw_arguments"] = call["raw_arguments"]
        out.append(item)
    free = text[:at]
    return (free[:-1] if free.endswith("\n") else free), out


def openai_arguments(call: ToolCall) -> Any:
    """The OpenAI `arguments` of a call read by `split_calls`, as received: the string when one came,
    an object as the object (key order kept), any other value as the JSON string that
    `parse_arguments` reads back into it."""
    raw = call.get("raw_arguments")
    if raw is not None:
        return raw
    value = call["arguments"]
    return value if isinstance(value, dict) else export_arguments(value)


def parse_tools(value: Any, field: str, *, allow_string: bool = False) -> list[Any] | None:
    """Tool definitions: an array (or, where allowed, a JSON string holding one; "" means none)."""
    if value is None:
        return None
    if allow_string and isinstance(value, str):
        if not value.strip():
            return None
        ok, value = try_json(value)
        if not ok:
            fail(field, "invalid_json", "is a string but not valid JSON")
    if not isinstance(value, list):
        fail(field, "invalid_type", f"must be an array of tool definitions, got {json_type(value)}")
    return value
