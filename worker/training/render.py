"""Trajectory → token ids + per-token span kinds (DESIGN §5 "Rendering").

A canonical trajectory (messages + character spans) is rendered with the student tokenizer's chat
template, or with the built-in plain template when the tokenizer has none (see `PLAIN_TEMPLATE_DOC`).
Each message's `text` is located inside the rendered string, spans are moved to rendered-string
offsets and mapped to tokens through the fast tokenizer's offset mapping: a token takes the kind of
the span holding the majority of its characters (ties go to the later span); a token touching no
span is NONE. Observation spans compete like any span but carry no loss (NONE). The end-of-turn
special token the template puts right after a supervised assistant message (and any whitespace
between the text and it) is ACTION, so the student learns to stop; a special token found in the
first turn's header opens turns and is never taken for an end of turn (eos always can be). The
template text after it (e.g. ChatML's trailing newline) is never generated and stays NONE.
Every assistant turn is supervised, not only the last; an assistant turn with `loss: false` or no
reason/action span is context. Sequences longer than `max_seq_len` are shortened by whole messages only (`_truncate`).
Loss uses shifted labels downstream: the kind of token t+1 decides the loss at position t.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

NONE, REASON, ACTION = 0, 1, 2
_KIND_CODES = {"reason": REASON, "action": ACTION, "observation": NONE}

PLAIN_TEMPLATE_DOC = """Built-in plain template, used when the tokenizer has no chat template:
    [bos]                                   (when the tokenizer has a bos token)
    "<|tools|>\\n" + json(tools) + "\\n"      (when tools are given)
    per message: "<|" + role + "|>\\n" + text + (eos if role == "assistant") + "\\n"
The text appears verbatim and the eos token closes every assistant turn (its end-of-turn token)."""


class RenderError(ValueError):
    """The trajectory cannot be rendered faithfully (template rewrites text, bad spans, no eos)."""


@dataclass
class RenderedExample:
    """One rendered trajectory: token ids and the kind (NONE/REASON/ACTION) of each token."""

    input_ids: list[int]
    kinds: list[int]
    truncated: bool
    id: str | None = None

    @property
    def n_reason(self) -> int:
        return self.kinds.count(REASON)

    @property
    def n_action(self) -> int:
        return self.kinds.count(ACTION)


@dataclass
class _Layout:
    """A rendered string, where each message's text sits in it, and the end-of-turn ranges."""

    text: str
    starts: list[int]  # rendered offset of messages[i]["text"]
    eot: list[tuple[int, int] | None]  # end-of-turn char range after assistant message i


def _is_supervised(message: Mapping[str, Any], spans: Sequence[Mapping[str, Any]]) -> bool:
    return message.get("role") == "assistant" and message.get("loss", True) is not False and any(
        s["kind"] in ("reason", "action") for s in spans
    )


def _special_strings(tokenizer: Any) -> list[str]:
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            specials.add(str(added))
    return sorted((s for s in specials if s), key=len, reverse=True)


def _plain_layout(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> _Layout:
    eos = tokenizer.eos_token
    if not eos:
        raise RenderError("the plain template needs an eos token to close assistant turns")
    parts: list[str] = [tokenizer.bos_token or ""]
    if tools:
        parts.append("<|tools|>\n" + json.dumps(tools, ensure_ascii=False) + "\n")
    pos = sum(len(p) for p in parts)
    starts: list[int] = []
    eot: list[tuple[int, int] | None] = []
    for m in messages:
        header = "<|" + str(m["role"]) + "|>\n"
        starts.append(pos + len(header))
        end = pos + len(header) + len(m["text"])
        closing = eos if m["role"] == "assistant" else ""
        eot.append((end, end + len(eos)) if closing else None)
        chunk = header + m["text"] + closing + "\n"
        parts.append(chunk)
        pos += len(chunk)
    return _Layout("".join(parts), starts, eot)


def _apply_template(tokenizer: Any, contents: list[tuple[str, str]], tools: Any) -> str:
    conv = [{"role": role, "content": text} for role, text in contents]
    try:
        out = tokenizer.apply_chat_template(conv, tools=tools or None, tokenize=False)
    except Exception as exc:  # jinja errors (e.g. templates requiring role alternation)
        raise RenderError(f"the chat template failed to render this trajectory: {exc}") from exc
    return out if isinstance(out, str) else str(out)


def _template_layout(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> _Layout:
    roles = [str(m["role"]) for m in messages]
    texts = [m["text"] for m in messages]
    rendered = _apply_template(tokenizer, list(zip(roles, texts, strict=True)), tools)
    # Locate the texts through a placeholder render: exact even when a text also occurs in template
    # markup (an assistant text "a" inside the "assistant" header). If the template treats content
    # differently from placeholders (content-dependent logic), fall back to an in-order search.
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    skeleton = _apply_template(tokenizer, list(zip(roles, marks, strict=True)), tools)
    starts: list[int] = []
    pieces: list[str] = []
    cursor = shift = 0
    exact = True
    for mark, text in zip(marks, texts, strict=True):
        at = skeleton.find(mark, cursor)
        if at < 0:
            exact = False
            break
        pieces.append(skeleton[cursor:at])
        pieces.append(text)
        starts.append(at + shift)
        shift += len(text) - len(mark)
        cursor = at + len(mark)
    if not exact or "".join(pieces) + skeleton[cursor:] != rendered:
        starts, cursor = [], 0
        for i, text in enumerate(texts):
            at = rendered.find(text, cursor)
            if at < 0:
                raise RenderError(
                    f"message {i} ({roles[i]}) text not found verbatim in the rendered chat template "
                    "output; the template rewrites message content (strip/transform), so spans cannot "
                    "be mapped. Use a template that emits content verbatim."
                )
            starts.append(at)
            cursor = at + len(text)
    # Special tokens that open the first turn's header (<|im_start|>, <|start_header_id|>, bos) start
    # turns; they never end one, even in a template that puts nothing after an assistant text.
    header = rendered[: starts[0]] if starts else ""
    specials = [t for t in _special_strings(tokenizer) if t == tokenizer.eos_token or t not in header]
    eot: list[tuple[int, int] | None] = []
    for i, role in enumerate(roles):
        end = starts[i] + len(texts[i])
        limit = starts[i + 1] if i + 1 < len(texts) else len(rendered)
        eot.append(_find_eot(rendered, end, limit, specials) if role == "assistant" else None)
    return _Layout(rendered, starts, eot)


def _find_eot(rendered: str, end: int, limit: int, specials: list[str]) -> tuple[int, int] | None:
    """The first special token after `end` (only whitespace between), as a char range from `end`."""
    pos = end
    while pos < limit and rendered[pos].isspace():
        pos += 1
    for tok in specials:
        if rendered.startswith(tok, pos):
            return (end, pos + len(tok))
    return None


def _layout(messages: Sequence[Mapping[str, Any]], tokenizer: Any, tools: Any) -> _Layout:
    if getattr(tokenizer, "chat_template", None):
        return _template_layout(messages, tokenizer, tools)
    return _plain_layout(messages, tokenizer, tools)


def _encode(tokenizer: Any, text: str) -> tuple[list[int], np.ndarray]:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: same ids/char offsets, less overhead
        enc = backend.encode(text, add_special_tokens=False)
        return enc.ids, np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(out["input_ids"]), np.asarray(out["offset_mapping"], dtype=np.int64).reshape(-1, 2)


def _token_kinds(offsets: np.ndarray, bounds: list[tuple[int, int, int]]) -> np.ndarray:
    """Kinds per token from sorted, non-overlapping char ranges (start, end, kind).

    Majority rule: the range covering most of a token's characters wins, ties go to the later
    range. Vectorised for the common case (a token touches ≤ 1 range); loops only at boundaries.
    """
    n = len(offsets)
    kinds = np.zeros(n, dtype=np.int64)
    if not bounds or n == 0:
        return kinds
    b_start = np.fromiter((b[0] for b in bounds), dtype=np.int64, count=len(bounds))
    b_end = np.fromiter((b[1] for b in bounds), dtype=np.int64, count=len(bounds))
    b_kind = np.fromiter((b[2] for b in bounds), dtype=np.int64, count=len(bounds))
    t_start, t_end = offsets[:, 0], offsets[:, 1]
    lo = np.searchsorted(b_end, t_start, side="right")  # first range ending after the token start
    hi = np.searchsorted(b_start, t_end, side="left")  # ranges starting before the token end
    hi = np.where(t_end > t_start, hi, lo)  # zero-width tokens touch nothing
    n_touch = hi - lo
    one = n_touch == 1
    kinds[one] = b_kind[lo[one]]
    for t in np.nonzero(n_touch > 1)[0]:
        best, best_len = 0, -1
        for j in range(lo[t], hi[t]):
            overlap = min(t_end[t], b_end[j]) - max(t_start[t], b_start[j])
            if overlap >= best_len:  # ">=": ties go to the later span
                best, best_len = j, overlap
        kinds[t] = b_kind[best]
    return kinds


def _char_ranges(
    messages: Sequence[Mapping[str, Any]], by_message: list[list[Mapping[str, Any]]], layout: _Layout
) -> list[tuple[int, int, int]]:
    ranges: list[tuple[int, int, int]] = []
    for i, m in enumerate(messages):
        base = layout.starts[i]
        trained = m.get("role") == "assistant" and m.get("loss", True) is not False
        for s in by_message[i]:
            kind = _KIND_CODES[s["kind"]] if trained else NONE
            ranges.append((base + s["start"], base + s["end"], kind))
        if layout.eot[i] is not None and _is_supervised(m, by_message[i]):
            a, b = layout.eot[i]  # type: ignore[misc]
            ranges.append((a, b, ACTION))
    return ranges


def _group_spans(
    messages: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]]
) -> list[list[Mapping[str, Any]]]:
    by_message: list[list[Mapping[str, Any]]] = [[] for _ in messages]
    for s in spans:
        i = s["message"]
        if not 0 <= i < len(messages):
            raise RenderError(f"span {s} points at message {i}, outside 0..{len(messages) - 1}")
        if s["kind"] not in _KIND_CODES:
            raise RenderError(f"span {s} has unknown kind {s['kind']!r}")
        if not 0 <= s["start"] < s["end"] <= len(messages[i]["text"]):
            raise RenderError(f"span {s} is outside message {i} text (length {len(messages[i]['text'])})")
        by_message[i].append(s)
    for i, group in enumerate(by_message):
        group.sort(key=lambda s: s["start"])
        for a, b in pairwise(group):
            if b["start"] < a["end"]:
                raise RenderError(f"spans overlap in message {i}: {a} and {b}")
    return by_message


def _render(
    messages: Sequence[Mapping[str, Any]], by_message: list[list[Mapping[str, Any]]], tokenizer: Any, tools: Any
) -> tuple[list[int], np.ndarray]:
    layout = _layout(messages, tokenizer, tools)
    ids, offsets = _encode(tokenizer, layout.text)
    return ids, _token_kinds(offsets, _char_ranges(messages, by_message, layout))


def _truncate(
    messages: Sequence[Mapping[str, Any]],
    by_message: list[list[Mapping[str, Any]]],
    tokenizer: Any,
    tools: Any,
    max_seq_len: int,
) -> tuple[list[int], np.ndarray] | None:
    """Shorten by whole messages; never cut inside a span.

    1. Drop whole trailing steps: keep the longest prefix `messages[:i+1]` ending right after a
       supervised assistant message that fits (the context stays exactly what the teacher saw).
    2. If even the first supervised step does not fit, drop whole leading messages after the
       leading system message(s), earliest first, and again keep the longest fitting prefix.
    Returns None when no window with a supervised assistant message fits.
    """
    n_sys = 0
    while n_sys < len(messages) and messages[n_sys].get("role") == "system":
        n_sys += 1
    ends = [i for i, m in enumerate(messages) if _is_supervised(m, by_message[i])]

    def attempt(keep: list[int]) -> tuple[list[int], np.ndarray] | None:
        try:
            ids, kinds = _render([messages[k] for k in keep], [by_message[k] for k in keep], tokenizer, tools)
        except RenderError:  # e.g. a template that refuses a window not starting with a user turn
            return None
        return (ids, kinds) if len(ids) <= max_seq_len else None

    for first in range(n_sys, (ends[-1] if ends else n_sys) + 1):
        head = list(range(n_sys))
        candidates = [e for e in ends if e >= first]
        # Longest fitting prefix by binary search: length grows with the number of kept steps.
        lo, hi, best = 0, len(candidates) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            got = attempt(head + list(range(first, candidates[mid] + 1)))
            if got is None:
                hi = mid - 1
            else:
                best, lo = got, mid + 1
        if best is not None:
            return best
    return None


def render_trajectory(
    messages: Sequence[Mapping[str, Any]],
    spans: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    max_seq_len: int,
    tools: Any = None,
    example_id: str | None = None,
) -> RenderedExample | None:
    """Render one canonical trajectory to token ids + kinds; None when nothing is left to train.

    Raises RenderError when spans are invalid or the template does not emit message text verbatim.
    """
    by_message = _group_spans(messages, spans)
    if not any(_is_supervised(m, by_message[i]) for i, m in enumerate(messages)):
        return None
    ids, kinds = _render(messages, by_message, tokenizer, tools)
    truncated = False
    if len(ids) > max_seq_len:
        got = _truncate(messages, by_message, tokenizer, tools, max_seq_len)
        if got is None:
            return None
        ids, kinds = got
        truncated = True
    # Position t is trained on token t+1, so a supervised token at index 0 teaches nothing.
    if not bool((kinds[1:] != NONE).any()):
        return None
    return RenderedExample(input_ids=list(ids), kinds=kinds.tolist(), truncated=truncated, id=example_id)


def collate(examples: Sequence[RenderedExample], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch: {"input_ids", "attention_mask", "kinds"}, each Long[B, T]; pad kind 0."""
    import torch

    width = max((len(e.input_ids) for e in examples), default=0)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    kinds = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        attention[row, :n] = 1
        kinds[row, :n] = torch.tensor(e.kinds, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "kinds": kinds}


__all__ = [
    "ACTION",
    "NONE",
    "PLAIN_TEMPLATE_DOC",
    "REASON",
    "RenderError",
    "RenderedExample",
    "collate",
    "render_trajectory",
]
