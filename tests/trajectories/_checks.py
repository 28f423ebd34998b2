"""Invariants every parsed sample must satisfy, shared by the format tests."""

from __future__ import annotations

import copy
import json
from typing import Any

from contract.formats import ParsedTrajectory, canonical_sha256, export, parse
from contract.spans import validate_spans


def dumps(messages: list[dict[str, Any]]) -> str:
    """Byte-exact form of canonical messages, key order included."""
    return json.dumps(messages, ensure_ascii=False)


def assert_tiled(pt: ParsedTrajectory) -> None:
    """Every assistant text is covered end to end by reason/action spans, except loss:false/empty ones."""
    for i, msg in enumerate(pt.messages):
        own = [s for s in pt.spans if s["message"] == i]
        if msg.get("loss") is False or not msg["text"]:
            assert own == [], (i, own)
            continue
        if msg["role"] != "assistant":
            assert all(s["kind"] == "observation" for s in own)
            continue
        cursor = 0
        for s in own:
            assert s["start"] == cursor and s["kind"] in ("reason", "action"), (i, own)
            cursor = s["end"]
        assert cursor == len(msg["text"]), (i, msg["text"], own)


def check(fmt: str, payload: dict[str, Any]) -> ParsedTrajectory:
    """Parse `payload` and assert: valid tiled spans, deterministic re-parse, export → parse round trip."""
    before = copy.deepcopy(payload)
    pt = parse(fmt, payload)
    assert payload == before, "parse must not mutate its input"
    assert validate_spans(pt.messages, pt.spans) == []
    assert_tiled(pt)
    again = parse(fmt, copy.deepcopy(payload))
    assert dumps(again.messages) == dumps(pt.messages)
    assert canonical_sha256(again.messages) == canonical_sha256(pt.messages)
    assert again.spans == pt.spans
    exported = json.loads(json.dumps(export(fmt, pt.messages, pt.tools, pt.spans)))  # through JSON, as served
    back = parse(fmt, exported)
    assert dumps(back.messages) == dumps(pt.messages), (exported, back.messages)
    assert back.spans == pt.spans
    assert back.tools == pt.tools
    return pt


def pieces(pt: ParsedTrajectory, message: int) -> list[tuple[str, str]]:
    """(kind, covered text) of the spans of one message."""
    text = pt.messages[message]["text"]
    return [(s["kind"], text[s["start"] : s["end"]]) for s in pt.spans if s["message"] == message]


def error_of(fmt: str, payload: Any) -> dict[str, str]:
    """The single error a bad payload raises."""
    from contract.formats import FormatError

    try:
        parse(fmt, payload)
    except FormatError as exc:
        assert len(exc.errors) == 1 and set(exc.errors[0]) == {"field", "code", "message"}
        assert exc.errors[0]["field"] in str(exc)
        return exc.errors[0]
    raise AssertionError("expected a FormatError")
