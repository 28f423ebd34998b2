"""validate_spans: one test per rule, with the error body it must produce; span_kind_chars; the one SpanKind."""

from __future__ import annotations

import json
from typing import get_args

import orjson
import pytest

from app.trajectories.schemas import KindName
from contract.formats import parse
from contract.spans import KINDS, SpanKind, span_kind_chars, validate_spans

MESSAGES = [
    {"role": "system", "text": "sys"},
    {"role": "user", "text": "Observation: 42"},
    {"role": "assistant", "text": "Thought: ok 🙂\nAction: go"},  # 24 code points: the emoji is one
    {"role": "tool", "text": "result"},
]


def sp(message: int, start: int, end: int, kind: str) -> dict:
    return {"message": message, "start": start, "end": end, "kind": kind}


def test_valid_spans_and_kind_chars() -> None:
    spans = [sp(1, 0, 15, "observation"), sp(2, 0, 14, "reason"), sp(2, 14, 24, "action"), sp(3, 0, 6, "observation")]
    assert validate_spans(MESSAGES, spans) == []
    assert validate_spans(MESSAGES, []) == []
    assert MESSAGES[2]["text"][14:24] == "Action: go"
    assert span_kind_chars(MESSAGES, spans) == {"reason": 14, "action": 10, "observation": 21}
    assert span_kind_chars(MESSAGES, []) == dict.fromkeys(KINDS, 0)


@pytest.mark.parametrize("spans, field, code, says", [
    ("nope", "spans", "invalid_type", "array"),
    ([[2, 0, 1, "reason"]], "spans[0]", "invalid_type", "object"),
    ([{"start": 0, "end": 1, "kind": "reason"}], "spans[0].message", "missing_field", "required"),
    ([sp(2, True, 3, "reason")], "spans[0].start", "invalid_type", "integer"),
    ([sp(2, 0, 3.0, "reason")], "spans[0].end", "invalid_type", "integer"),  # type: ignore[arg-type]
    ([sp(2, 0, 3, "thinking")], "spans[0].kind", "invalid_kind", "reason, action, observation"),
    ([sp(4, 0, 3, "reason")], "spans[0].message", "message_out_of_range", "4 messages"),
    ([sp(-1, 0, 3, "reason")], "spans[0].message", "message_out_of_range", "is -1"),
    ([sp(2, -1, 3, "reason")], "spans[0].start", "start_out_of_range", ">= 0"),
    ([sp(2, 0, 25, "reason")], "spans[0].end", "end_out_of_range", "has 24 characters"),
    ([sp(2, 5, 5, "reason")], "spans[0].end", "empty_span", "5..5"),
    ([sp(2, 6, 5, "reason")], "spans[0].end", "empty_span", "greater than start"),
    ([sp(3, 0, 3, "action")], "spans[0].kind", "kind_not_allowed", "messages[3] is a tool message"),
    ([sp(1, 0, 3, "reason")], "spans[0].kind", "kind_not_allowed", "assistant"),
    ([sp(0, 0, 3, "observation")], "spans[0].kind", "kind_not_allowed", "tool or user"),
    ([sp(2, 0, 3, "observation")], "spans[0].kind", "kind_not_allowed", "assistant message"),
])
def test_each_rule_reports_the_span_and_why(spans: object, field: str, code: str, says: str) -> None:
    errors = validate_spans(MESSAGES, spans)
    assert len(errors) == 1, errors
    assert (errors[0]["field"], errors[0]["code"]) == (field, code)
    assert says in errors[0]["message"]


def test_order_and_overlap_point_at_both_spans() -> None:
    errors = validate_spans(MESSAGES, [sp(2, 0, 10, "reason"), sp(2, 5, 12, "action"), sp(1, 0, 3, "observation"),
                                       sp(3, 0, 2, "observation")])
    assert [(e["field"], e["code"]) for e in errors] == [("spans[1]", "overlap"), ("spans[2]", "not_sorted")]
    assert errors[0]["message"] == "spans[1] overlaps spans[0] (message 2, 5..12 vs 0..10)"
    assert "spans[2] (message 1, 0..3) comes after spans[0] (message 2, 0..10)" in errors[1]["message"]
    # touching spans are fine; a bad span does not become the reference for the next one
    assert validate_spans(MESSAGES, [sp(2, 0, 5, "reason"), sp(2, 5, 9, "action")]) == []
    assert [e["code"] for e in validate_spans(MESSAGES, [sp(2, 0, 99, "reason"), sp(2, 3, 5, "action")])] == \
        ["end_out_of_range"]


def test_several_problems_are_all_reported_but_capped() -> None:
    errors = validate_spans(MESSAGES, [{"message": "2", "start": None, "end": 1, "kind": "reason"}])
    assert {e["field"] for e in errors} == {"spans[0].message", "spans[0].start"}
    many = validate_spans(MESSAGES, [sp(9, 0, 1, "reason")] * 200)
    assert len(many) == 51 and many[-1]["code"] == "too_many_errors"


def test_one_span_kind_everywhere_and_plain_strings_on_the_wire() -> None:
    assert KINDS == tuple(SpanKind) == get_args(KindName) == ("reason", "action", "observation")
    parsed = parse("react", {"task": "q", "text": "Thought: t\nAction: a\nObservation: o\nFinal Answer: f"})
    assert {type(s["kind"]) for s in parsed.spans} == {SpanKind}
    plain = [{**s, "kind": s["kind"].value} for s in parsed.spans]
    assert [p["kind"] for p in plain] == ["reason", "action", "observation", "action"]
    assert json.dumps(parsed.spans) == json.dumps(plain) and orjson.dumps(parsed.spans) == orjson.dumps(plain)
    # a kind read back from JSON is a plain string, and compares equal to its member
    assert json.loads(json.dumps(parsed.spans)) == parsed.spans
    assert span_kind_chars(parsed.messages, plain) == span_kind_chars(parsed.messages, parsed.spans)
