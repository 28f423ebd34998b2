"""The span contract: `{message, start, end, kind}` over canonical messages, and its validation.

Rules (`validate_spans`): every span is an object with integer `message`, `start`, `end` (booleans
are not integers) and `kind` in KINDS; `message` indexes an existing message; 0 <= start < end <=
len(text) in code points (Python str indices); reason/action only in assistant messages,
observation only in tool or user messages; spans sorted by (message, start) and never overlapping.
Extra keys are ignored. Each error names the offending span (`spans[i].field`) and says why.

The types are TypedDicts over plain JSON, so a message or a span round-trips through JSON unchanged.
`SpanKind` is a StrEnum: a kind read back from JSON is a plain string equal to its member, so kinds
are compared with `==` / `in` (never `is`, never `.value`), and `SpanKind(kind)` turns one into a member.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict, get_args

from contract.validation import FieldError


class SpanKind(StrEnum):
    """The kinds a span can have: the one definition every part uses."""

    REASON = "reason"
    ACTION = "action"
    OBSERVATION = "observation"


KINDS: tuple[str, ...] = tuple(k.value for k in SpanKind)
SUPERVISED_KINDS: tuple[str, ...] = (SpanKind.REASON.value, SpanKind.ACTION.value)  # trained; observation never
Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)
Split = Literal["train", "eval"]


class Span(TypedDict):
    """``{message, start, end, kind}``: code-point offsets into ``messages[message].text``."""

    message: int
    start: int
    end: int
    kind: SpanKind


class ToolCall(TypedDict):
    """A structured tool call kept beside the rendered text.

    ``arguments``: the value (a JSON string as received is parsed; one that does not parse stays a
    string). ``raw_arguments``: the arguments string exactly as received, when the format sent one
    (OpenAI ``function.arguments``). The database may reorder ``arguments``' keys; the rendered text
    and ``raw_arguments`` keep the order as received, and exports read those (``split_calls``).
    """

    id: str | None
    name: str
    arguments: Any
    raw_arguments: NotRequired[str]


class Message(TypedDict):
    """A canonical message. ``text`` is what spans index into and what training renders.

    ``loss: false`` marks a message that is never trained (ShareGPT's per-turn flag);
    ``raw_tool_calls`` keeps a smolagents tool-call log that is not in the usual shape, verbatim.
    ``calls_at``: where the rendered Hermes blocks of ``tool_calls`` start in ``text`` (they run to
    its end, joined by "\\n"); absent when the calls are kept as structure only (smolagents steps
    whose text shows the action).
    ``parts`` (anthropic, openai-responses assistant messages): the source's blocks / items in order,
    each with the fields that are not in ``text`` kept verbatim (signatures, redacted or encrypted
    reasoning, item ids) and its ``length`` in ``text``, so export rebuilds them in order.
    ``is_error`` (anthropic tool results): the ``tool_result`` block's flag, as received.
    ``observation: true`` (user messages): the message feeds an observation back (the log's own
    mark, e.g. SWE-agent's ``message_type``, or the request option ``observation_role: "user"``).
    ``tool_call_ids`` (tool messages): the calls a result answers when the log links it to several
    (SWE-agent); one id is kept as ``tool_call_id``.
    ``thinking_blocks`` (swe-agent assistant messages): the history item's thinking blocks verbatim
    (their reasoning is rendered at the start of ``text``).
    """

    role: Role
    text: str
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]
    loss: NotRequired[bool]
    raw_tool_calls: NotRequired[str]
    calls_at: NotRequired[int]
    parts: NotRequired[list[dict[str, Any]]]
    is_error: NotRequired[bool]
    observation: NotRequired[bool]
    tool_call_ids: NotRequired[list[str]]
    thinking_blocks: NotRequired[list[dict[str, Any]]]


class DatasetRecord(TypedDict):
    """One item of a dataset snapshot as the export and the worker read it."""

    id: str
    messages: list[Message]
    spans: list[Span]
    tools: list[Any] | None
    complexity: float | None
    split: Split
    source: NotRequired[str | None]
    task_type: NotRequired[str | None]
    outcome: NotRequired[str | None]
    reward: NotRequired[float | None]
    teacher_model: NotRequired[str | None]
    span_revision: NotRequired[int]


_ROLES_FOR_KIND: dict[str, tuple[str, ...]] = {
    SpanKind.REASON: ("assistant",), SpanKind.ACTION: ("assistant",), SpanKind.OBSERVATION: ("tool", "user"),
}
_MAX_ERRORS = 50


def _error(field: str, code: str, message: str) -> FieldError:
    return {"field": field, "code": code, "message": message}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(messages: Sequence[Message], span: Any, f: str) -> list[FieldError]:
    """The errors of one span taken alone."""
    if not isinstance(span, dict):
        return [_error(f, "invalid_type", f"{f} must be an object {{message, start, end, kind}}")]
    errors = []
    for key in ("message", "start", "end"):
        if key not in span:
            errors.append(_error(f"{f}.{key}", "missing_field", f"{f}.{key} is required"))
        elif not _is_int(span[key]):
            errors.append(_error(f"{f}.{key}", "invalid_type",
                                 f"{f}.{key} must be an integer, got {span[key]!r}"))
    kind = span.get("kind")
    if kind not in KINDS:
        errors.append(_error(f"{f}.kind", "invalid_kind",
                             f"{f}.kind must be one of {', '.join(KINDS)}, got {kind!r}"))
    if errors:
        return errors
    m, start, end, kind = span["message"], span["start"], span["end"], str(kind)
    if not 0 <= m < len(messages):
        return [_error(f"{f}.message", "message_out_of_range",
                       f"{f}.message is {m} but the trajectory has {len(messages)} messages")]
    role, length = messages[m]["role"], len(messages[m]["text"])
    if start < 0:
        errors.append(_error(f"{f}.start", "start_out_of_range", f"{f}.start is {start}; it must be >= 0"))
    if end > length:
        errors.append(_error(f"{f}.end", "end_out_of_range",
                             f"{f}.end is {end} but messages[{m}].text has {length} characters"))
    if start >= end:
        errors.append(_error(f"{f}.end", "empty_span",
                             f"{f} is {start}..{end}; end must be greater than start"))
    if role not in _ROLES_FOR_KIND[kind]:
        allowed = " or ".join(_ROLES_FOR_KIND[kind])
        errors.append(_error(f"{f}.kind", "kind_not_allowed",
                             f"{f} is {kind!r} but messages[{m}] is a {role} message; "
                             f"{kind} spans go in {allowed} messages"))
    return errors


def validate_spans(messages: Sequence[Message], spans: Any) -> list[FieldError]:
    """Errors [{"field", "code", "message"}] for `spans` over canonical `messages`; [] when valid."""
    if not isinstance(spans, list):
        return [_error("spans", "invalid_type", "spans must be an array of span objects")]
    errors: list[FieldError] = []
    prev: tuple[int, int, int, int] | None = None  # (index, message, start, end) of the last good span
    for i, span in enumerate(spans):
        if len(errors) >= _MAX_ERRORS:
            errors.append(_error("spans", "too_many_errors", f"stopped after {_MAX_ERRORS} errors"))
            break
        f = f"spans[{i}]"
        own = _check(messages, span, f)
        if own:
            errors.extend(own)
            continue
        m, start, end = span["message"], span["start"], span["end"]
        if prev is not None:
            pi, pm, ps, pe = prev
            if (m, start) < (pm, ps):
                errors.append(_error(f, "not_sorted",
                                     f"{f} (message {m}, {start}..{end}) comes after spans[{pi}] "
                                     f"(message {pm}, {ps}..{pe}); spans must be sorted by (message, start)"))
                continue
            if m == pm and start < pe:
                errors.append(_error(f, "overlap",
                                     f"{f} overlaps spans[{pi}] (message {m}, {start}..{end} vs {ps}..{pe})"))
                continue
        prev = (i, m, start, end)
    return errors


def span_kind_chars(messages: Sequence[Message], spans: Sequence[Span]) -> dict[str, int]:
    """Characters covered per kind (all KINDS present); `spans` are assumed valid."""
    totals = dict.fromkeys(KINDS, 0)
    for span in spans:
        totals[span["kind"]] += span["end"] - span["start"]
    return totals
