"""Trajectory complexity, stored per trajectory for curriculum ordering and dataset filters.

`compute_complexity(messages, spans)` gives:
- n_actions: action spans; n_steps: assistant messages; n_chars: characters of all message texts;
- n_tool_errors: observation messages (role tool, or any message holding an observation span)
  whose text looks like a failure, each counted once. Conservative rule, any of:
  "Traceback (most recent call last)" anywhere; a line starting (after blanks and an optional
  "Observation[ N]:" label) with "Error", "error", "ERROR", "Exception", a dotted name ending in
  Error/Exception ("ValueError", "requests.exceptions.HTTPError") followed by ":" or the line end,
  or with the word "Failed"/"FAILED"; a non-zero "exit code"/"exit status"/"exited with code"/
  "return code"/"returncode"; a JSON object whose first key is "error" with a non-null value.
  The word "error" or "failed" in running text does not count.
- score = n_actions + 2 * n_tool_errors + n_chars / 2000: non-decreasing in each count, so
  longer, more tool-heavy and more error-laden runs sort later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypedDict

from contract.spans import Message, Span, SpanKind

# Line-start markers, searched as "\n" + marker (a literal first character keeps sre fast) plus one
# match at offset 0; the exit-code and traceback checks run only when a cheap substring test hits.
_LINE_MARKER = (r"[ \t]*(?:Observation(?: \d+)?:[ \t]*)?"
                r"(?:(?:(?:[A-Za-z_][\w.]*)?(?:Error|Exception)|error|ERROR)(?::|[ \t]*$)|(?:Failed|FAILED)\b)")
_AT_START = re.compile(_LINE_MARKER, re.M)
_AFTER_NEWLINE = re.compile("\n" + _LINE_MARKER, re.M)
_EXIT_CODE = re.compile(
    r"\b(?:exit(?:ed with)? (?:code|status)|return ?code|returncode)[ \t]*[:=]?[ \t]*(?:-\d+|[1-9]\d*)", re.I
)
_ACTION, _OBSERVATION = SpanKind.ACTION, SpanKind.OBSERVATION  # read once: an enum member costs ~10× a global
_JSON_ERROR = re.compile(r"\s*\{\s*\"error\"\s*:\s*+(?!null\b)")


def looks_like_error(text: str) -> bool:
    """True when a tool/observation text matches the conservative failure rule above."""
    if "Traceback (most recent call last)" in text:
        return True
    if _AT_START.match(text) or _AFTER_NEWLINE.search(text) or _JSON_ERROR.match(text):
        return True
    low = text.lower()
    return ("exit" in low or "return" in low) and _EXIT_CODE.search(text) is not None


class Complexity(TypedDict):
    """What ``compute_complexity`` returns (stored as the trajectory's ``complexity`` JSON)."""

    n_actions: int
    n_steps: int
    n_chars: int
    n_tool_errors: int
    score: float


def compute_complexity(messages: Sequence[Message], spans: Sequence[Span]) -> Complexity:
    n_actions, observed = 0, set()
    for s in spans:
        kind = s["kind"]
        if kind == _ACTION:
            n_actions += 1
        elif kind == _OBSERVATION:
            observed.add(s["message"])
    n_steps = n_chars = n_tool_errors = 0
    for i, m in enumerate(messages):
        role, text = m["role"], m["text"]
        n_chars += len(text)
        if role == "assistant":
            n_steps += 1
        if (role == "tool" or i in observed) and looks_like_error(text):
            n_tool_errors += 1
    return {
        "n_actions": n_actions,
        "n_steps": n_steps,
        "n_chars": n_chars,
        "n_tool_errors": n_tool_errors,
        "score": n_actions + 2 * n_tool_errors + n_chars / 2000,
    }
