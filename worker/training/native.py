"""Native tool-call rendering: canonical messages given to the student's chat template *as structure*, so the
training text is exactly what the family's template writes at inference (DESIGN §5 "Rendering").

The stored, annotated form of an assistant turn stays the canonical Hermes text (``<think>`` block + free text
+ ``<tool_call>`` blocks, `contract.formats.base.render_tool_call`); spans index into it and never change. In
native mode each such turn is split into its **pieces** (`assistant_pieces`: the reasoning block, the free text,
one piece per call) and passed to the template as ``{role, content, reasoning_content?, tool_calls}``: calls as
``{id, type: "function", function: {name, arguments}}`` (arguments an object, or a JSON string for templates
that concatenate them), reasoning in ``reasoning_content`` when the template reads that field (Qwen3), inline
``<think>`` otherwise. Tool turns keep ``tool_call_id``; tool definitions go in ``tools=``.

**The span mapping** (`native_layout`) places every piece in the template's output: each call by rendering the
turn with its calls ``[:j]`` and ``[:j+1]`` and taking what the extra call added (its delimiters included:
``<tool_call>…</tool_call>``, Llama's bare ``{"name", "parameters"}``), whitespace at its edges left out — the
turn alone after one user turn, its run of blocks then found verbatim in the full render, else the whole
conversation re-rendered per call; the reasoning and the free text by search (verbatim, else
whitespace-tolerant) between the end of the previous message and the first call. The result is an ordinary
`template.Placement` whose ``bounds`` send every canonical offset to a rendered one: offsets inside a text
piece follow its placement; a call block's offsets go to its rendered start and its end to its rendered end (a
span over a whole block — the action span — covers the whole rendered call); separators between pieces go to
the end of the previous piece.
A turn whose pieces are not all found in order (the template dropped its text, as Llama 3.x does next to a call)
is left unplaced, as `template` leaves any text it cannot find.

`native_support` probes a template once: does it render structured calls at all (Mistral v0.2, Gemma 2/3,
Phi-3, Phi-4-mini's public template, Granite 3.0 and SmolLM2 leave them out or refuse tool turns), and which
argument type and reasoning field it takes. Where it cannot, `render` falls back to the canonical text and
counts it (``native_fallback``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.training.template import (
    Layout,
    Placement,
    RenderError,
    apply_template,
    assistant_eots,
    template_info,
    whitespace_tolerant,
)

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_OPEN, _CLOSE = "<tool_call>\n", "\n</tool_call>"  # a canonical block (`render_tool_call`)


@dataclass(frozen=True)
class Support:
    """What a chat template does with structured tool calls (`native_support`)."""

    calls: bool  # renders tool_calls (name and arguments appear in its output)
    string_arguments: bool  # takes arguments as a JSON string (it concatenates them)
    reasoning_field: bool  # reads reasoning_content
    reason: str | None = None  # why calls is False
    null_content: bool = False  # a turn of calls alone needs content None, not "" (DeepSeek-R1)


@dataclass(frozen=True)
class Piece:
    """A part of a canonical assistant text: ``[start, end)``; ``call`` indexes ``tool_calls`` for a call block."""

    kind: str  # "reasoning" | "text" | "call"
    start: int
    end: int
    call: int | None = None


_SUPPORT_CACHE: dict[str, Support] = {}
_PROBE_NAME, _PROBE_VALUE = "probe_fn", "probe_value"


def _probe(tokenizer: Any, string_arguments: bool, content: str | None) -> str:
    args: Any = {"probe_arg": _PROBE_VALUE}
    call: dict[str, Any] = {"id": "call_probe", "type": "function",
                            "function": {"name": _PROBE_NAME,
                                         "arguments": json.dumps(args) if string_arguments else args}}
    conv: list[dict[str, Any]] = [{"role": "user", "content": "probe question"},
            {"role": "assistant", "content": content, "tool_calls": [call]},
            {"role": "tool", "content": "probe result", "tool_call_id": "call_probe", "name": _PROBE_NAME},
            {"role": "assistant", "content": "probe answer"}]
    return apply_template(tokenizer, conv, None)


def native_support(tokenizer: Any) -> Support:
    """Probe the tokenizer's chat template (cached per template); no template: no native calls."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return Support(False, False, False, "no chat template (the plain template writes Hermes blocks)")
    found = _SUPPORT_CACHE.get(template)
    if found is not None:
        return found
    support, why = None, None
    for as_string, content in ((False, ""), (False, None), (True, ""), (True, None)):
        try:
            out = _probe(tokenizer, as_string, content)
        except RenderError as exc:
            why = why or f"the chat template refuses a tool-call conversation ({str(exc)[:120]})"
            continue
        if _PROBE_NAME in out and '"' + _PROBE_VALUE in out:
            support = Support(True, as_string, "reasoning_content" in template, None, content is None)
            break
    why = why or "the chat template leaves tool calls out"
    result = support or Support(False, False, False, why)
    if len(_SUPPORT_CACHE) > 64:
        _SUPPORT_CACHE.clear()
    _SUPPORT_CACHE[template] = result
    return result


def assistant_pieces(message: Mapping[str, Any]) -> list[Piece] | None:
    """The pieces of a canonical assistant text with ``tool_calls``: its ``<think>`` block (through the newlines
    after ``</think>``), its free text (without the newline before the first block) and each call's Hermes
    block, in order. None when the text is not in that form (e.g. a block does not match its call)."""
    text, calls = message["text"], message.get("tool_calls") or []
    pieces: list[Piece] = []
    pos = 0
    if text.startswith(_THINK_OPEN) and _THINK_CLOSE in text:
        pos = text.index(_THINK_CLOSE) + len(_THINK_CLOSE)
        while pos < len(text) and text[pos] == "\n":
            pos += 1
        pieces.append(Piece("reasoning", 0, pos))
    # The blocks run from `calls_at` (else the n-th "<tool_call>" from the end) to the end of the text; each is
    # matched by its name, not re-rendered: stored arguments may have their keys reordered (JSONB).
    first = message.get("calls_at")
    if first is None:
        opens = [i for i in range(len(text)) if text.startswith(_OPEN, i)]
        first = opens[-len(calls)] if calls and len(opens) >= len(calls) else -1
    if not calls or first < pos:
        return None
    free_end = first - 1 if first > pos and text[first - 1] == "\n" else first
    if free_end > pos:
        pieces.append(Piece("text", pos, free_end))
    cursor = first
    for j, call in enumerate(calls):
        if j and text.startswith("\n", cursor):
            cursor += 1
        end = text.find(_CLOSE, cursor)
        if not text.startswith(_OPEN, cursor) or end < 0:
            return None
        try:
            name = json.loads(text[cursor + len(_OPEN) : end]).get("name")
        except (ValueError, AttributeError):
            return None
        if name != call["name"]:
            return None
        pieces.append(Piece("call", cursor, end + len(_CLOSE), j))
        cursor = end + len(_CLOSE)
    return pieces if not text[cursor:].strip() else None


def _reasoning_inner(block: str) -> str:
    inner = block[len(_THINK_OPEN) : block.index(_THINK_CLOSE)]
    return inner.strip("\n")


def _arguments(call: Mapping[str, Any], support: Support) -> Any:
    """The call's arguments as the template takes them, in the key order received (``raw_arguments``)."""
    value = call["arguments"]
    raw = call.get("raw_arguments")
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    if support.string_arguments and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return value


def native_message(message: Mapping[str, Any], pieces: Sequence[Piece], support: Support,
                   n_calls: int | None = None) -> dict[str, Any]:
    """The structured form of a canonical assistant turn with calls (its first `n_calls` calls when given)."""
    text = message["text"]
    free = next((text[p.start : p.end] for p in pieces if p.kind == "text"), "")
    think = next((text[p.start : p.end] for p in pieces if p.kind == "reasoning"), "")
    item: dict[str, Any] = {"role": "assistant"}
    if think and support.reasoning_field:
        item["reasoning_content"] = _reasoning_inner(think)
    elif think:
        free = think + free
    calls = (message.get("tool_calls") or [])[: n_calls]
    item["content"] = free if free or not calls or not support.null_content else None
    if calls:
        item["tool_calls"] = [{"id": c.get("id") or f"call_{i}", "type": "function",
                               "function": {"name": c["name"], "arguments": _arguments(c, support)}}
                              for i, c in enumerate(calls)]
    elif item["content"] is None:
        item["content"] = ""
    return item


def native_conversation(messages: Sequence[Mapping[str, Any]], support: Support,
                        pieces: Sequence[list[Piece] | None] | None = None) -> list[dict[str, Any]]:
    """The messages as the template takes them natively: assistant turns with calls as structure (their
    canonical text when it is not in canonical form), others as ``{role, content}`` (+ a tool turn's ids)."""
    pieces = pieces if pieces is not None else [
        assistant_pieces(m) if m["role"] == "assistant" and m.get("tool_calls") else None for m in messages]
    out = []
    for m, own in zip(messages, pieces, strict=True):
        if own is not None:
            out.append(native_message(m, own, support))
            continue
        item: dict[str, Any] = {"role": m["role"], "content": m["text"]}
        if m["role"] == "tool":
            item.update({k: m[k] for k in ("tool_call_id", "name") if m.get(k)})
        out.append(item)
    return out


def _trimmed(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _edge_score(text: str, a: int, b: int, specials: re.Pattern[str] | None) -> int:
    """How many ends of text[a:b] sit on a boundary: the string's edge, whitespace or a special token."""
    def before_ok() -> bool:
        return a == 0 or text[a - 1].isspace() or (
            specials is not None and any(m.end() == a for m in specials.finditer(text, max(0, a - 64), a)))

    def after_ok() -> bool:
        return b == len(text) or text[b].isspace() or (specials is not None and specials.match(text, b) is not None)

    return int(before_ok()) + int(after_ok())


def _added(before: str, after: str, specials: re.Pattern[str] | None) -> tuple[int, int]:
    """The range of `after` that `before` lacks, whitespace at its edges left out. An insertion can often slide
    (``X<`` + ``tool_call>…<`` vs ``X`` + ``<tool_call>…`` before ``<|im_end|>``): of its possible places the one
    whose ends sit on boundaries (whitespace, special tokens) wins, ties to the rightmost."""
    limit = min(len(before), len(after))
    p = 0
    while p < limit and before[p] == after[p]:
        p += 1
    s = 0
    while s < limit - p and before[-1 - s] == after[-1 - s]:
        s += 1
    q = len(after) - s
    if len(before) - s - p != 0:  # a replacement, not an insertion: no sliding
        return _trimmed(after, p, q)
    width = q - p
    best, best_score = _trimmed(after, p, q), -1
    x = p
    while True:
        a, b = _trimmed(after, x, x + width)
        score = _edge_score(after, a, b, specials)
        if score > best_score:
            best, best_score = (a, b), score
        if x == 0 or after[x - 1] != after[x - 1 + width]:
            break
        x -= 1
    return best


def _additions(message: Mapping[str, Any], pieces: list[Piece], support: Support, conv: list[dict[str, Any]],
               k: int, tokenizer: Any, tools: Any) -> list[tuple[str, int, int]]:
    """(render, start, end) per call of message k: what the j-th call adds to the render with the first j."""
    variant = list(conv)
    out = []
    variant[k] = native_message(message, pieces, support, 0)
    before = apply_template(tokenizer, variant, tools)
    specials = template_info(tokenizer).specials
    for j in range(sum(p.kind == "call" for p in pieces)):
        variant[k] = native_message(message, pieces, support, j + 1)
        after = apply_template(tokenizer, variant, tools)
        out.append((after, *_added(before, after, specials)))
        before = after
    return out


def _call_ranges(messages: Sequence[Mapping[str, Any]], k: int, pieces: list[Piece], support: Support,
                 conv: list[dict[str, Any]], tokenizer: Any, tools: Any, rendered: str,
                 cursor: int) -> list[tuple[int, int]]:
    """Rendered ranges of message k's calls. Fast path: the turn alone after one user turn gives each call's
    block; the run of blocks (separators included) found verbatim from `cursor` in the full render places them.
    Else, exactly: what the j-th call adds to the full render with the first j calls."""
    try:
        mini = _additions(messages[k], pieces, support, [{"role": "user", "content": "?"}, conv[k]], 1, tokenizer,
                          None)
    except RenderError:
        mini = []
    last = mini[-1][0] if mini else ""
    # Later calls are appended after earlier ones: each block sits at the same place in the last render.
    if mini and all(b > a and last[a:b] == text[a:b] for text, a, b in mini):
        first = mini[0][1]
        at = rendered.find(last[first : mini[-1][2]], cursor)
        if at >= 0:
            return [(at + a - first, at + b - first) for _, a, b in mini]
    return [(a, b) for _, a, b in _additions(messages[k], pieces, support, conv, k, tokenizer, tools)]


def _find(text: str, rendered: str, cursor: int, limit: int) -> Placement | None:
    at = rendered.find(text, cursor, limit)
    found = Placement(at, len(text)) if at >= 0 else whitespace_tolerant(text, rendered[:limit], cursor)
    return found


def _place_turn(text: str, pieces: list[Piece], calls: list[tuple[int, int]], rendered: str,
                cursor: int) -> Placement | None:
    """Message-level placement of a native turn: `bounds` from each piece's rendered place (module docstring)."""
    first_call = calls[0][0] if calls else len(rendered)
    where: list[tuple[Piece, Placement | None, tuple[int, int] | None]] = []
    for piece in pieces:
        if piece.kind == "call":
            where.append((piece, None, calls[piece.call or 0]))
            continue
        chunk = text[piece.start : piece.end]
        if not chunk.strip():
            where.append((piece, None, None))
            continue
        found = _find(chunk, rendered, cursor, first_call)
        if found is None:
            return None
        cursor = found.end
        where.append((piece, found, None))
    bounds = np.full(len(text) + 1, -1, dtype=np.int64)
    last = None
    for piece, placed, call in where:
        if placed is not None:
            bounds[piece.start : piece.end + 1] = [placed.at(o) for o in range(piece.end - piece.start + 1)]
            last = placed.end
        elif call is not None:
            bounds[piece.start : piece.end] = call[0]
            bounds[piece.end] = call[1]
            last = call[1]
        elif last is not None:
            bounds[piece.start : piece.end + 1] = last
    first = next((int(b) for b in bounds if b >= 0), None)
    if first is None:
        return None
    prev = first
    for o in range(len(bounds)):  # separators and unplaced whitespace: the end of what precedes them
        if bounds[o] < 0:
            bounds[o] = prev
        prev = int(bounds[o])
    if np.any(np.diff(bounds) < 0):
        return None
    return Placement(int(bounds[0]), len(text), bounds)


def native_layout(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any,
                  support: Support) -> Layout:
    """The native render of a conversation and every message's placement in it (see the module docstring).
    Raises RenderError when the template refuses the conversation (Llama 3.x refuses parallel calls)."""
    pieces = [assistant_pieces(m) if m["role"] == "assistant" and m.get("tool_calls") else None for m in messages]
    conv = native_conversation(messages, support, pieces)
    rendered = apply_template(tokenizer, conv, tools)
    placed: list[Placement | None] = []
    cursor = 0
    for k, m in enumerate(messages):
        own = pieces[k]
        found: Placement | None
        if own is not None:
            calls = _call_ranges(messages, k, own, support, conv, tokenizer, tools, rendered, cursor)
            ok = all(a >= cursor and b > a for a, b in calls) and all(
                calls[i][1] <= calls[i + 1][0] for i in range(len(calls) - 1))
            found = _place_turn(m["text"], own, calls, rendered, cursor) if ok else None
        else:
            found = _find(m["text"], rendered, cursor, len(rendered))
        placed.append(found)
        if found is not None:
            cursor = found.end
    return Layout(rendered, placed, assistant_eots(messages, placed, rendered, tokenizer))


def native_generation_prompt(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> str:
    """The prompt for the next assistant turn with earlier calls rendered natively (what a serving stack
    that passes structured ``tool_calls`` back to the template gives the model)."""
    conv = native_conversation(messages, native_support(tokenizer))
    return apply_template(tokenizer, conv, tools, generation_prompt=True)


def uses_native(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the trajectory has structured calls for a native render to pass (else native = canonical)."""
    return any(m["role"] == "assistant" and m.get("tool_calls") for m in messages)
