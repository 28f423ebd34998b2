"""Assistant turns made of ordered blocks (Anthropic content blocks, Responses API items): how they
render into one canonical assistant text, their auto spans, and the way back for export.

Rules shared by `anthropic` and `openai-responses`:
- a turn is a list of pieces in the source's order: reasoning (rendered "<think>\\n" + text +
  "\\n</think>\\n"; nothing when its text is empty), text (as is), a tool call (its Hermes block,
  `base.render_tool_call`), or opaque (redacted reasoning: no text, never trained);
- a "\\n" goes between two pieces that have text, unless the first is reasoning (its rendering ends
  with one). A turn "reasoning, text, calls" therefore renders exactly like an openai assistant
  message with `reasoning_content`, and interleaved reasoning stays where the model wrote it;
- the message keeps `parts`: one entry per piece, the source's fields that are not in the text kept
  verbatim, plus `length` (the piece's own text length, before rendering). Export walks `parts`
  over the text (`split_turn`), so nothing is rebuilt by comparing strings;
- `calls_at` (where the Hermes blocks start) is set when the calls are the last pieces with text,
  as for openai messages;
- auto spans: each run of reasoning/text pieces (a reasoning piece starts a new run) is segmented
  like openai free text (`segment.free_text_spans`: the think block → reason, the rest → reason, or
  action for a final answer); each tool-call block → one action span; a "\\n" separator belongs to
  the span before it.

`chat_tools` writes Anthropic and Responses tool definitions in the Chat Completions shape
(`{type: "function", function: {name, description, parameters}}`) for exports that need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract.formats.base import fail
from contract.formats.jsonvalue import UNSTORABLE_JSON, is_json_value, try_json
from contract.formats.segment import Piece as SpanPiece
from contract.formats.segment import free_text_spans
from contract.spans import Message, SpanKind, ToolCall

THINK, TEXT, CALL, OPAQUE = "think", "text", "call", "opaque"
_OPEN, _CLOSE = "<think>\n", "\n</think>\n"
_CALL_OPEN, _CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
_PART_DEPTH = 3  # messages[i].parts[j]: where a part sits in the stored messages
Range = tuple[int, int, str]  # (start, end, piece kind) of a piece with text, its separator included


@dataclass
class Piece:
    """One block of a turn: its kind, its own text (for a call: the rendered Hermes block) and the
    source fields kept for export."""

    kind: str
    text: str
    part: dict[str, Any]


def keep(source: dict[str, Any], drop: tuple[str, ...], field: str, depth: int = _PART_DEPTH) -> dict[str, Any]:
    """The fields of `source` that are not in the text, checked storable (NUL, depth, size) where they
    will sit: `depth` levels deep in the stored messages (a part's own content parts sit 5 deep)."""
    kept = {k: v for k, v in source.items() if k not in drop}
    if not is_json_value(kept, depth):
        fail(field, "invalid_value", UNSTORABLE_JSON)
    return kept


def assistant_message(pieces: list[Piece], calls: list[ToolCall]) -> tuple[Message, list[Range]]:
    """The canonical assistant message of a turn and the ranges its spans are cut from."""
    chunks: list[str] = []
    ranges: list[Range] = []
    parts: list[dict[str, Any]] = []
    pos = 0
    for p in pieces:
        parts.append(p.part if p.kind == OPAQUE else {**p.part, "length": len(p.text)})
        if not p.text:
            continue
        if ranges and ranges[-1][2] != THINK:
            chunks.append("\n")
            s, e, k = ranges[-1]
            ranges[-1] = (s, e + 1, k)
            pos += 1
        rendered = _OPEN + p.text + _CLOSE if p.kind == THINK else p.text
        chunks.append(rendered)
        ranges.append((pos, pos + len(rendered), p.kind))
        pos += len(rendered)
    msg: Message = {"role": "assistant", "text": "".join(chunks)}
    if calls:
        msg["tool_calls"] = calls
        first = next((k for k, r in enumerate(ranges) if r[2] == CALL), None)
        if first is not None and all(r[2] == CALL for r in ranges[first:]):
            msg["calls_at"] = ranges[first][0]
    msg["parts"] = parts
    return msg, ranges


def turn_spans(text: str, ranges: list[Range], final: bool) -> list[SpanPiece]:
    """Auto spans of one turn (see the module docstring); tiles the text."""
    out: list[SpanPiece] = []
    k = 0
    while k < len(ranges):
        start, end, kind = ranges[k]
        if kind == CALL:
            out.append((start, end, SpanKind.ACTION))
            k += 1
            continue
        j = k + 1
        while j < len(ranges) and ranges[j][2] == TEXT:
            j += 1
        out.extend(free_text_spans(text, start, ranges[j - 1][1], final))
        k = j
    return out


def split_turn(text: str, parts: list[Any], kinds: list[str | None]) -> list[str] | None:
    """Each part's own text (reasoning without its think tags), or None when `parts` does not
    describe `text` (then the caller falls back to the plain openai reading)."""
    out: list[str] = []
    pos, prev = 0, None
    for part, kind in zip(parts, kinds, strict=True):
        if kind is None or not isinstance(part, dict):
            return None
        if kind == OPAQUE:
            out.append("")
            continue
        n = part.get("length")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return None
        if n == 0:
            out.append("")
            continue
        if prev is not None and prev != THINK:
            if not text.startswith("\n", pos):
                return None
            pos += 1
        if kind == THINK:
            if not text.startswith(_OPEN, pos) or not text.startswith(_CLOSE, pos + len(_OPEN) + n):
                return None
            pos += len(_OPEN)
        seg = text[pos : pos + n]
        if len(seg) != n:
            return None
        pos += n + (len(_CLOSE) if kind == THINK else 0)
        out.append(seg)
        prev = kind
    return out if pos == len(text) else None


def split_lengths(text: str, lengths: Any, sep: str) -> list[str] | None:
    """`text` cut into pieces of the given lengths joined by `sep`; None when they do not fit."""
    if not isinstance(lengths, list):
        return None
    if not lengths:
        return None if text else []
    out, pos = [], 0
    for k, n in enumerate(lengths):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return None
        if k and not text.startswith(sep, pos):
            return None
        pos += len(sep) if k else 0
        out.append(text[pos : pos + n])
        pos += n
    return out if pos == len(text) else None


def block_arguments(block: str, call: ToolCall) -> Any:
    """The arguments of a rendered Hermes block, read back from the text (key order as received);
    the stored call's arguments when the block does not parse."""
    if block.startswith(_CALL_OPEN) and block.endswith(_CALL_CLOSE):
        ok, value = try_json(block[len(_CALL_OPEN) : len(block) - len(_CALL_CLOSE)])
        if ok and isinstance(value, dict) and "arguments" in value:
            return value["arguments"]
    return call["arguments"]


def chat_tools(tools: list[Any] | None) -> list[Any] | None:
    """Tool definitions in the Chat Completions shape: openai ones as they are, Anthropic
    `{name, description, input_schema}` and Responses `{type: "function", name, parameters}` /
    `{type: "custom", name}` rewritten; server tools (web search, bash, …), which no chat
    fine-tuning file can declare, are left out."""
    if tools is None:
        return None
    out: list[Any] = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name", ""), str):
            continue
        if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
            out.append(tool)
            continue
        if "input_schema" in tool:
            fields = {"name": tool.get("name"), "description": tool.get("description"),
                      "parameters": tool["input_schema"]}
        elif tool.get("type") in ("function", "custom") and tool.get("name"):
            fields = {k: tool.get(k) for k in ("name", "description", "parameters", "strict")}
        else:
            continue
        out.append({"type": "function", "function": {k: v for k, v in fields.items() if v is not None}})
    return out
