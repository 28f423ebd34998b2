"""Edit operations on a span set, applied in order and all-or-nothing.

Operations (``app.annotations.schemas``):

- ``set_kind {index, kind}``: change the kind of one span.
- ``move {index, start?, end?}``: change one or both bounds (same message).
- ``split {index, at, kind_right?}``: cut ``start..end`` into ``start..at`` and ``at..end``
  (``start < at < end``); the right part takes ``kind_right`` or the span's kind.
- ``merge {index, kind?}``: join the span with the next one. Allowed when both are in the same
  message and the text between them (``text[left.end:right.start]``) is empty or only whitespace;
  the merged span runs from the left start to the right end, covering that whitespace, with
  ``kind`` or else the left span's kind.
- ``delete {index}``; ``add {message, start, end, kind}``.

After every op the list is re-sorted by ``(message, start)`` (stable), and the ``index`` of each
op refers to the list as the previous ops left it. An op that cannot apply (an index out of range,
a split point outside its span, a merge across messages or over text, a span the op itself makes
invalid: out of its message, empty, or a kind its message's role does not allow) raises
``EditError`` naming ``ops[i]``. Overlaps are checked on the final list as a whole (the caller runs
``validate_spans``), so ops may pass through an intermediate overlap; ``apply_ops`` also returns,
per resulting span, the op that last produced it, so such errors can name the op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.annotations.schemas import AddOp, DeleteOp, EditOp, MergeOp, MoveOp, SetKindOp, SplitOp
from contract.spans import Message, Span, SpanKind, validate_spans
from contract.validation import FieldError


class EditError(Exception):
    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.error: FieldError = {"field": field, "code": code, "message": message}


@dataclass
class _Item:
    span: Span
    op: int | None  # the op that last produced this span; None = unchanged from the stored set


def _check_alone(messages: Sequence[Message], span: Span, field: str) -> None:
    """Raise for the first rule ``span`` breaks by itself (reusing the span validator)."""
    errors = validate_spans(messages, [span])
    if errors:
        e = errors[0]
        raise EditError(e["field"].replace("spans[0]", field, 1), e["code"], e["message"].replace("spans[0]", field))


def _at(items: list[_Item], index: int, field: str) -> _Item:
    if index >= len(items):
        raise EditError(f"{field}.index", "index_out_of_range",
                        f"{field}.index is {index} but there are {len(items)} spans at this point")
    return items[index]


def _apply(messages: Sequence[Message], items: list[_Item], op: EditOp, i: int) -> None:
    f = f"ops[{i}]"
    if isinstance(op, SetKindOp):
        item = _at(items, op.index, f)
        span: Span = {**item.span, "kind": SpanKind(op.kind)}
        _check_alone(messages, span, f)
        items[op.index] = _Item(span, i)
    elif isinstance(op, MoveOp):
        item = _at(items, op.index, f)
        if op.start is None and op.end is None:
            raise EditError(f, "nothing_to_move", f"{f} gives neither start nor end")
        span = Span(**item.span)
        if op.start is not None:
            span["start"] = op.start
        if op.end is not None:
            span["end"] = op.end
        _check_alone(messages, span, f)
        items[op.index] = _Item(span, i)
    elif isinstance(op, SplitOp):
        item = _at(items, op.index, f)
        s = item.span
        if not s["start"] < op.at < s["end"]:
            raise EditError(f"{f}.at", "split_outside_span",
                            f"{f}.at is {op.at}; it must lie strictly inside spans[{op.index}] "
                            f"({s['start']}..{s['end']})")
        right: Span = {**s, "start": op.at, "kind": SpanKind(op.kind_right or s["kind"])}
        _check_alone(messages, right, f)
        left: Span = {**s, "end": op.at}
        items[op.index:op.index + 1] = [_Item(left, i), _Item(right, i)]
    elif isinstance(op, MergeOp):
        left = _at(items, op.index, f).span
        if op.index + 1 >= len(items):
            raise EditError(f"{f}.index", "no_next_span", f"{f}: spans[{op.index}] is the last span; nothing to merge")
        right = items[op.index + 1].span
        if left["message"] != right["message"]:
            raise EditError(f, "merge_across_messages",
                            f"{f}: spans[{op.index}] is in message {left['message']} but the next span is in "
                            f"message {right['message']}")
        gap = messages[left["message"]]["text"][left["end"]:right["start"]]
        if gap and not gap.isspace():
            raise EditError(f, "merge_over_text",
                            f"{f}: between spans[{op.index}] and spans[{op.index + 1}] lies non-whitespace text "
                            f"({left['end']}..{right['start']}); move a bound instead")
        merged: Span = {**left, "end": max(left["end"], right["end"]), "kind": SpanKind(op.kind or left["kind"])}
        _check_alone(messages, merged, f)
        items[op.index:op.index + 2] = [_Item(merged, i)]
    elif isinstance(op, DeleteOp):
        _at(items, op.index, f)
        del items[op.index]
    elif isinstance(op, AddOp):
        span = {"message": op.message, "start": op.start, "end": op.end, "kind": SpanKind(op.kind)}
        _check_alone(messages, span, f)
        items.append(_Item(span, i))
    else:  # pragma: no cover - the schema admits no other op
        raise EditError(f, "unknown_op", f"{f} is not a known operation")


def apply_ops(messages: Sequence[Message], spans: list[Span], ops: list[EditOp]
              ) -> tuple[list[Span], list[int | None]]:
    """The span set after ``ops``, and for each resulting span the op that produced it (or None).

    Raises ``EditError`` for the first op that cannot apply; nothing is changed then.
    """
    items = [_Item(Span(**s), None) for s in spans]
    for i, op in enumerate(ops):
        _apply(messages, items, op, i)
        items.sort(key=lambda it: (it.span["message"], it.span["start"]))
    return [it.span for it in items], [it.op for it in items]
