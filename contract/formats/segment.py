"""The rule-based segmenter that proposes auto spans for every format.

Segmentation rules shared by the formats (offsets are code points into the canonical text):
- an assistant text that starts with "<think>" and has a "</think>" gets a reason span through
  "</think>" plus the newlines right after it;
- the rest of the free text: inline "<tool_call>…</tool_call>" blocks → action (the text between
  or after blocks attaches to the preceding span when it is whitespace, else is reason); otherwise
  ReAct labels at line start (`label_spans`); otherwise one span, action when the message is a final
  answer, reason when not;
- structured tool calls (rendered blocks at the end of the text) → one action span per block, the
  "\\n" between blocks attached to the preceding block;
- tool messages, and user messages whose text starts with "Observation:" / "Observation N:",
  → one observation span over the whole text; messages with `"loss": false` and empty texts get none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from contract.spans import Message, Span, SpanKind

Piece = tuple[int, int, SpanKind]  # (start, end, kind) inside one message text
# ReAct labels at line start, optionally numbered the FireAct way ("Thought 1:"). Searching for
# "\n" + label is several times faster than a MULTILINE "^" (sre scans for the literal first).
_LABEL_NAMES = r"(Thought|Action Input|Action|Observation|Final Answer)(?: \d+)?:"
_LABEL_AT = re.compile(_LABEL_NAMES)
_LABEL_AFTER_NEWLINE = re.compile("\n" + _LABEL_NAMES)
Label = tuple[int, int, str]  # (start, end, name) of "Name[ N]:"
_ACTION_LABELS = frozenset({"Action", "Action Input", "Final Answer"})
_OBSERVATION_PREFIX = re.compile(r"Observation(?: \d+)?:")
_INLINE_CALL = re.compile(r"<tool_call>.*?</tool_call>", re.S)
_NEWLINES = re.compile(r"\n*")


def is_observation_text(text: str) -> bool:
    """A user text that feeds an observation back (FireAct's OpenAI-shaped data)."""
    return _OBSERVATION_PREFIX.match(text) is not None


def find_labels(text: str, start: int = 0, end: int | None = None) -> list[Label]:
    """ReAct labels at line starts inside text[start:end], in order."""
    end = len(text) if end is None else end
    out: list[Label] = []
    if start == 0 or text.startswith("\n", start - 1):
        m = _LABEL_AT.match(text, start, end)
        if m:
            out.append((start, m.end(), m.group(1)))
    out.extend((m.start() + 1, m.end(), m.group(1)) for m in _LABEL_AFTER_NEWLINE.finditer(text, start, end))
    return out


def label_spans(text: str, start: int, end: int, labels: list[Label] | None = None) -> list[Piece]:
    """ReAct segmentation of text[start:end]: Thought/Observation → reason; Action (+ the Action Input
    right after it), Final Answer → action; text before the first label → reason. Tiles the range."""
    out: list[Piece] = []
    found = find_labels(text, start, end) if labels is None else labels
    if not found or found[0][0] > start:
        out.append((start, found[0][0] if found else end, SpanKind.REASON))
    prev = None
    for k, (s, _, name) in enumerate(found):
        seg_end = found[k + 1][0] if k + 1 < len(found) else end
        if name == "Action Input" and prev in ("Action", "Action Input"):
            out[-1] = (out[-1][0], seg_end, SpanKind.ACTION)
        else:
            out.append((s, seg_end, SpanKind.ACTION if name in _ACTION_LABELS else SpanKind.REASON))
        prev = name
    return out


def _extend_or_reason(out: list[Piece], start: int, end: int, text: str) -> None:
    """Text between/after inline blocks: whitespace joins the preceding span, anything else is reason."""
    if start >= end:
        return
    if out and text[start:end].isspace():
        out[-1] = (out[-1][0], end, out[-1][2])
    else:
        out.append((start, end, SpanKind.REASON))


def free_text_spans(text: str, start: int, end: int, final: bool) -> list[Piece]:
    """Segment assistant free text text[start:end] (see the module docstring). Tiles the range."""
    out: list[Piece] = []
    pos = start
    if text.startswith("<think>", start):
        close = text.find("</think>", start, end)
        if close >= 0:
            pos = _NEWLINES.match(text, close + len("</think>"), end).end()  # type: ignore[union-attr]
            out.append((start, pos, SpanKind.REASON))
    if pos >= end:
        return out
    blocks = list(_INLINE_CALL.finditer(text, pos, end))
    if blocks:
        cur = pos
        for b in blocks:
            _extend_or_reason(out, cur, b.start(), text)
            out.append((b.start(), b.end(), SpanKind.ACTION))
            cur = b.end()
        _extend_or_reason(out, cur, end, text)
    elif labels := find_labels(text, pos, end):
        out.extend(label_spans(text, pos, end, labels))
    else:
        out.append((pos, end, SpanKind.ACTION if final else SpanKind.REASON))
    return out


def hermes_assistant_spans(text: str, block_lens: list[int], final: bool) -> list[Piece]:
    """Spans for free text followed by rendered tool-call blocks of the given lengths (joined by "\\n")."""
    calls_len = sum(block_lens) + max(len(block_lens) - 1, 0)
    calls_start = len(text) - calls_len
    out = free_text_spans(text, 0, calls_start, final and not block_lens)
    cur = calls_start
    for k, n in enumerate(block_lens):
        stop = cur + n + (1 if k + 1 < len(block_lens) else 0)
        out.append((cur, stop, SpanKind.ACTION))
        cur = stop
    return out


def auto_spans(
    messages: Sequence[Message], segment_assistant: Callable[[int, str, bool], list[Piece]]
) -> list[Span]:
    """Auto spans for all messages; `segment_assistant(index, text, final)` handles assistant texts.

    `final`: the assistant message has no tool calls and is last or followed by a user/system message.
    """
    spans: list[Span] = []
    n = len(messages)
    for i, msg in enumerate(messages):
        text = msg["text"]
        if not text or msg.get("loss") is False:
            continue
        role = msg["role"]
        if role == "assistant":
            final = "tool_calls" not in msg and (i + 1 == n or messages[i + 1]["role"] in ("user", "system"))
            spans.extend({"message": i, "start": s, "end": e, "kind": k}
                         for s, e, k in segment_assistant(i, text, final) if s < e)
        elif role == "tool" or (role == "user" and is_observation_text(text)):
            spans.append({"message": i, "start": 0, "end": len(text), "kind": SpanKind.OBSERVATION})
    return spans
