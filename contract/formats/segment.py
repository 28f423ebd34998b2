"""The rule-based segmenter that proposes auto spans for every format.

Segmentation rules shared by the formats (offsets are code points into the canonical text):
- an assistant text that starts with "<think>" and has a "</think>" gets a reason span through
  "</think>" plus the newlines right after it;
- the rest of the free text: inline "<tool_call>…</tool_call>" blocks → action (the text between
  or after blocks attaches to the preceding span when it is whitespace, else is reason); otherwise
  ReAct labels at line start (`label_spans`); otherwise, in a text-command step (below), the prose →
  reason and the final command block → action; otherwise one span, action when the message is a
  final answer, reason when not;
- structured tool calls (rendered blocks at the end of the text) → one action span per block, the
  "\\n" between blocks attached to the preceding block;
- tool messages, and user messages that feed an observation back → one observation span over the
  whole text; messages with `"loss": false` and empty texts get none.

Observations in user turns (`is_observation_user`): a user message whose text starts with
"Observation:" / "Observation N:" (FireAct) or "<returncode>" (mini-swe-agent), or that carries
`"observation": true` in the canonical form. The request option `observation_role: "user"`
(`observations_in_user_turns`, set around a format's parse by `contract.formats.parse`) marks every
user message after the first trained assistant message that way; so does the swe-agent format.

Final answers and text-command steps: an assistant message with no tool calls is a *final answer*
when it is last or followed by a user or system message that is not an observation (then its free
text is one action span). It is a *text-command step* when it is followed by anything else (a tool
message, an observation, another assistant message): agents such as SWE-agent and mini-swe-agent
write prose and then one command block, answered by the environment. There, when the text ends
has a command block (`command_block`: the last fenced block "```[lang]\\n…\\n```" whose fences
start lines, an unclosed last fence running to the end, or the last "<command>…</command>"), the text
before the block → reason, the block (fences included, plus trailing whitespace) → action, prose
after it → reason; with no command block the whole text is reason. So a final answer that ends
with code stays one action, and code quoted inside the prose of a step stays reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from contract.spans import Message, Span, SpanKind

Piece = tuple[int, int, SpanKind]  # (start, end, kind) inside one message text
# ReAct labels at line start, optionally numbered the FireAct way ("Thought 1:"). Searching for
# "\n" + label is several times faster than a MULTILINE "^" (sre scans for the literal first).
_LABEL_NAMES = r"(Thought|Action Input|Action|Observation|Final Answer)(?: \d+)?:"
_LABEL_AT = re.compile(_LABEL_NAMES)
_LABEL_AFTER_NEWLINE = re.compile("\n" + _LABEL_NAMES)
Label = tuple[int, int, str]  # (start, end, name) of "Name[ N]:"
_ACTION_LABELS = frozenset({"Action", "Action Input", "Final Answer"})
_OBSERVATION_PREFIX = re.compile(r"Observation(?: \d+)?:|<returncode>")
# A fence line: "```" + an optional info string (an opener) or nothing (a closer), at a line start.
_FENCE_LINE = re.compile(r"^[ \t]*```([^`\n]*)$", re.M)
_COMMAND_TAG = re.compile(r"<command>.*?(?:</command>|\Z)", re.S)
_OBSERVATION_USERS: ContextVar[bool] = ContextVar("observation_users", default=False)
_INLINE_CALL = re.compile(r"<tool_call>.*?</tool_call>", re.S)
_NEWLINES = re.compile(r"\n*")


def is_observation_text(text: str) -> bool:
    """A user text that feeds an observation back by its own mark (FireAct's "Observation:",
    mini-swe-agent's "<returncode>")."""
    return _OBSERVATION_PREFIX.match(text) is not None


def is_observation_user(msg: Message) -> bool:
    """A user message that carries an observation (see the module docstring)."""
    return msg["role"] == "user" and (msg.get("observation") is True or is_observation_text(msg["text"]))


@contextmanager
def observations_in_user_turns(enabled: bool = True) -> Iterator[None]:
    """While active, `auto_spans` marks every user message after the first trained assistant message
    `"observation": true` (the request option `observation_role: "user"`)."""
    token = _OBSERVATION_USERS.set(enabled)
    try:
        yield
    finally:
        _OBSERVATION_USERS.reset(token)


def mark_observation_users(messages: Sequence[Message]) -> None:
    """Mark every user message after the first trained assistant message `"observation": true`."""
    seen_assistant = False
    for msg in messages:
        if msg["role"] == "assistant" and msg.get("loss") is not False:
            seen_assistant = True
        elif seen_assistant and msg["role"] == "user" and msg.get("loss") is not False:
            msg["observation"] = True


def command_block(text: str, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
    """(start, end) of the last command block in text[start:end] (module docstring), or None."""
    end = len(text) if end is None else end
    fenced: tuple[int, int] | None = None
    opened: int | None = None
    for m in _FENCE_LINE.finditer(text, start, end):
        if opened is None:
            opened = m.start()
        elif not m.group(1).strip():
            fenced, opened = (opened, m.end()), None
    if opened is not None:
        fenced = (opened, end)
    tagged = None
    for m in _COMMAND_TAG.finditer(text, start, end):
        tagged = (m.start(), m.end())
    found = [b for b in (fenced, tagged) if b is not None]
    return max(found, key=lambda b: b[1]) if found else None


def command_spans(text: str, start: int, end: int) -> list[Piece]:
    """A text-command step text[start:end]: prose → reason, the command block → action (with the
    whitespace after it), prose after it → reason; no block → all reason. Tiles the range."""
    block = command_block(text, start, end)
    if block is None:
        return [(start, end, SpanKind.REASON)]
    b_start, b_end = block
    out: list[Piece] = [(start, b_start, SpanKind.REASON)] if b_start > start else []
    if b_end == end or text[b_end:end].isspace():
        out.append((b_start, end, SpanKind.ACTION))
    else:
        out += [(b_start, b_end, SpanKind.ACTION), (b_end, end, SpanKind.REASON)]
    return out


def find_labels(text: str, start: int = 0, end: int | None = None) -> list[Label]:
    """ReAct labels at line starts inside text[start:end], in order."""
    end = len(text) if end is None else end
    out: list[Label] = []
    if text.find(":", start, end) < 0:  # every label ends with one: a C scan rules most sentences out
        return out
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


def free_text_spans(text: str, start: int, end: int, final: bool, commands: bool = False) -> list[Piece]:
    """Segment assistant free text text[start:end] (see the module docstring); `commands`: the text is
    a text-command step. Tiles the range."""
    out: list[Piece] = []
    pos = start
    if text.startswith("<think>", start):
        close = text.find("</think>", start, end)
        if close >= 0:
            pos = _NEWLINES.match(text, close + len("</think>"), end).end()  # type: ignore[union-attr]
            out.append((start, pos, SpanKind.REASON))
    if pos >= end:
        return out
    blocks = list(_INLINE_CALL.finditer(text, pos, end)) if text.find("<tool_call>", pos, end) >= 0 else []
    if blocks:
        cur = pos
        for b in blocks:
            _extend_or_reason(out, cur, b.start(), text)
            out.append((b.start(), b.end(), SpanKind.ACTION))
            cur = b.end()
        _extend_or_reason(out, cur, end, text)
    elif labels := find_labels(text, pos, end):
        out.extend(label_spans(text, pos, end, labels))
    elif commands:
        out.extend(command_spans(text, pos, end))
    else:
        out.append((pos, end, SpanKind.ACTION if final else SpanKind.REASON))
    return out


def hermes_assistant_spans(text: str, block_lens: list[int], final: bool) -> list[Piece]:
    """Spans for free text followed by rendered tool-call blocks of the given lengths (joined by "\\n").
    A message with no blocks that is not final is a text-command step."""
    calls_len = sum(block_lens) + max(len(block_lens) - 1, 0)
    calls_start = len(text) - calls_len
    out = free_text_spans(text, 0, calls_start, final and not block_lens, commands=not final and not block_lens)
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

    `final`: the assistant message has no tool calls and is last or followed by a system message or
    a user message that is not an observation. Under `observations_in_user_turns` the user messages
    after the first trained assistant message are marked observations first (in place).
    """
    if _OBSERVATION_USERS.get():
        mark_observation_users(messages)
    spans: list[Span] = []
    n = len(messages)
    for i, msg in enumerate(messages):
        text = msg["text"]
        if not text or msg.get("loss") is False:
            continue
        role = msg["role"]
        if role == "assistant":
            nxt = messages[i + 1] if i + 1 < n else None
            final = "tool_calls" not in msg and (
                nxt is None or nxt["role"] == "system" or (nxt["role"] == "user" and not is_observation_user(nxt)))
            spans.extend({"message": i, "start": s, "end": e, "kind": k}
                         for s, e, k in segment_assistant(i, text, final) if s < e)
        elif role == "tool" or is_observation_user(msg):
            spans.append({"message": i, "start": 0, "end": len(text), "kind": SpanKind.OBSERVATION})
    return spans
