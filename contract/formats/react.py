"""ReAct plain text (FireAct, LangChain): `text` with Thought/Action/Action Input/Observation/Final
Answer lines, plus `task` (the question); optional `tools`.

Canonical rules (labels count only at the start of a line, "\\n" line ends, optionally numbered the
FireAct way: "Thought 1:", "Action 2:", "Observation 2:"; matching is case-sensitive):
- messages: the task as a user turn, then alternating assistant and tool turns. When `text` starts
  with "Question:", that block (up to the first label) restates the task: it is dropped, and it
  gives the user turn when `task` is absent.
- an assistant turn is the text from its first line up to the next "Observation" label line,
  without the one "\\n" that separates it from that line; empty turns are skipped.
- a tool turn is one Observation: its text starts after "Observation[ N]:" and one optional space
  and runs to where the next assistant turn starts, without the one separating "\\n".
  (A newline at the very end of `text` is content of the last turn, not a separator.)
- where the next assistant turn starts (the rule that lets observations contain label lines): in
  the region between two Observation labels, the turn starts at the last "Thought" line before the
  first "Action"/"Final Answer" line (at that Action/Final Answer line when no Thought precedes it;
  when the region has neither, at its last Thought line, else the observation runs to the region's
  end). So an observation may contain "Thought:" anywhere, even at the start of a line, and
  "Action Input:" lines; it ends at a line starting with "Action"/"Final Answer" or at the
  assistant's own last Thought before it, and it can never contain a line starting "Observation".
- never-trained text is sanitized, not refused: NUL and lone surrogates inside a tool turn become
  U+FFFD and are counted in `sanitized`; anywhere else in `text` (the question, assistant turns)
  they are refused with their offset.
- auto spans in assistant turns: text before the first label and Thought → reason; Action together
  with a following Action Input (multi-line JSON included) → action; Final Answer → action. Tool
  turns → observation. Labels and the "\\n" ending each segment belong to their span.
Export joins assistant texts and "Observation: " + tool texts with "\\n" (labels come out
unnumbered), the first user message as `task`; system messages are dropped.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from contract.formats.base import (
    ParsedTrajectory,
    fail,
    observation_text,
    opt_str,
    parse_tools,
    refuse_character,
)
from contract.formats.segment import (
    Label,
    find_labels,
    is_observation_text,
    label_spans,
)
from contract.pglimits import UNSTORABLE
from contract.spans import Message, Span, SpanKind

_QUESTION = re.compile(r"Question:[ ]?")


def _piece(text: str, start: int, end: int) -> str:
    """text[start:end] without the "\\n" separating it from the next turn (kept at the text's end)."""
    return text[start : end - 1] if end < len(text) and text.endswith("\n", start, end) else text[start:end]


def _turn_start(region: list[Label], region_end: int) -> int:
    """Where the assistant turn begins inside the region that follows an Observation label."""
    act = next((lab for lab in region if lab[2] in ("Action", "Final Answer")), None)
    limit = act[0] if act is not None else region_end
    thought = None
    for lab in region:
        if lab[0] >= limit:
            break
        if lab[2] == "Thought":
            thought = lab
    if thought is not None:
        return thought[0]
    return act[0] if act is not None else region_end


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    # One field holds every turn: each replaced character must sit in a tool turn (checked below).
    text, sanitized = observation_text(payload.get("text"), "text")
    given: str = payload["text"]
    replaced = [m.start() for m in UNSTORABLE.finditer(given)] if sanitized else []

    def strict(start: int, end: int) -> None:
        k = bisect_left(replaced, start)
        if k < len(replaced) and replaced[k] < end:
            refuse_character(given, replaced[k], "text")

    if not text.strip():
        fail("text", "empty", "must not be empty")
    task = opt_str(payload.get("task"), "task")
    tools = parse_tools(payload.get("tools"), "tools")
    labels = find_labels(text)
    pos = 0
    question = _QUESTION.match(text)
    if question:
        pos = labels[0][0] if labels else len(text)
        strict(0, pos)
        if task is None:
            task = _piece(text, question.end(), pos)
    if task is None:
        fail("task", "missing_field", "is required (or start the text with 'Question:')")
    messages: list[Message] = [{"role": "user", "text": task}]
    spans: list[Span] = []

    def add_assistant(start: int, end: int, own: list[Label]) -> None:
        strict(start, end)
        body = _piece(text, start, end)
        if body:
            shifted = [(s - start, e - start, name) for s, e, name in own]
            spans.extend({"message": len(messages), "start": s, "end": e, "kind": k}
                         for s, e, k in label_spans(body, 0, len(body), shifted))
            messages.append({"role": "assistant", "text": body})

    obs = [k for k, lab in enumerate(labels) if lab[2] == "Observation"]
    bounds = [*obs, len(labels)]
    add_assistant(pos, labels[obs[0]][0] if obs else len(text), labels[: bounds[0]])
    for j, k in enumerate(obs):
        nxt = bounds[j + 1]
        region = labels[k + 1 : nxt]
        region_end = labels[nxt][0] if nxt < len(labels) else len(text)
        start = _turn_start(region, region_end)
        label_end = labels[k][1]
        body = _piece(text, min(label_end + text.startswith(" ", label_end), start), start)
        if body:
            spans.append({"message": len(messages), "start": 0, "end": len(body), "kind": SpanKind.OBSERVATION})
        messages.append({"role": "tool", "text": body})
        add_assistant(start, region_end, [lab for lab in region if lab[0] >= start])
    if len(messages) == 1:
        fail("text", "empty", "has no Thought/Action/Observation content after the question")
    return ParsedTrajectory(messages=messages, spans=spans, tools=tools, sanitized=sanitized)


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    task: str | None = None
    pieces: list[str] = []
    for msg in messages:
        role, body = msg["role"], msg["text"]
        if role == "system":
            continue
        if role == "user" and task is None:
            task = body
        elif role == "assistant" or (role == "user" and is_observation_text(body)):
            pieces.append(body)
        else:
            pieces.append("Observation: " + body)
    if task is None:
        fail("messages", "not_expressible", "a react trajectory needs a user message (the task)")
    result: dict[str, Any] = {"text": "\n".join(pieces), "task": task}
    if tools is not None:
        result["tools"] = tools
    return result
