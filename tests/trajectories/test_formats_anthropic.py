"""Anthropic Messages format: canonical text, block order, kept signatures, tool results, errors,
export independent of key order, and real Claude logs through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.formats import canonical_sha256, export, parse
from tests.datasets.helpers import approve, create
from tests.datasets.openai_validator import openai_line_errors
from tests.trajectories._checks import check, dumps, error_of, pieces

LOGS = sorted((Path(__file__).parents[1] / "data" / "logs" / "anthropic").glob("*.json"))


def block(name: str, arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


def jsonb_order(value: Any) -> Any:
    """`value` with every object's keys in the order Postgres jsonb returns them (length, then bytes)."""
    if isinstance(value, dict):
        return {k: jsonb_order(value[k]) for k in sorted(value, key=lambda k: (len(k.encode()), k.encode()))}
    if isinstance(value, list):
        return [jsonb_order(v) for v in value]
    return value


WEATHER = {"system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}], "messages": [
    {"role": "user", "content": "Weather in Zürich?"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Need the tool 🤔", "signature": "EqQBsig=="},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"unit": "c", "city": "Zürich"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12°C", "is_error": False}]},
    {"role": "assistant", "content": [{"type": "text", "text": "It is 12°C."}]},
], "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}


def test_thinking_text_tool_use_renders_exactly_like_openai() -> None:
    pt = check("anthropic", WEATHER)
    assert pt.messages[0] == {"role": "system", "text": "Be brief.\nUse tools."}
    think = "<think>\nNeed the tool 🤔\n</think>\n"
    call = block("get_weather", {"unit": "c", "city": "Zürich"})
    assert pt.messages[2]["text"] == think + "Checking.\n" + call
    assert pt.messages[2]["tool_calls"] == [
        {"id": "toolu_1", "name": "get_weather", "arguments": {"unit": "c", "city": "Zürich"}}]
    assert pt.messages[2]["parts"][0] == {"type": "thinking", "signature": "EqQBsig==", "length": 15}
    assert pt.messages[3] == {"role": "tool", "text": "12°C", "tool_call_id": "toolu_1", "is_error": False}
    as_openai = parse("openai", {"messages": [
        {"role": "system", "content": "Be brief.\nUse tools."},
        {"role": "user", "content": "Weather in Zürich?"},
        {"role": "assistant", "reasoning_content": "Need the tool 🤔", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"unit": "c", "city": "Zürich"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12°C"},
        {"role": "assistant", "content": "It is 12°C."}]})
    assert [m["text"] for m in pt.messages] == [m["text"] for m in as_openai.messages]
    assert pt.spans == as_openai.spans
    assert pt.messages[2]["calls_at"] == len(think + "Checking.\n")
    assert pieces(pt, 2) == [("reason", think), ("reason", "Checking.\n"), ("action", call)]
    assert pieces(pt, 4) == [("action", "It is 12°C.")]


def test_interleaved_thinking_and_redacted_blocks_keep_their_order_through_export() -> None:
    blocks = [
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "thinking", "thinking": "First look up A.", "signature": "sigA"},
        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "A"}},
        {"type": "thinking", "thinking": "Now B.", "signature": "sigB"},
        {"type": "text", "text": "Looking up B too."},
        {"type": "tool_use", "id": "t2", "name": "lookup", "input": {"q": "B"}},
    ]
    payload = {"messages": [
        {"role": "user", "content": "A and B?"}, {"role": "assistant", "content": blocks},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a"},
                                     {"type": "tool_result", "tool_use_id": "t2", "content": "b"}]}]}
    pt = check("anthropic", payload)
    a, b = block("lookup", {"q": "A"}), block("lookup", {"q": "B"})
    text = "<think>\nFirst look up A.\n</think>\n" + a + "\n<think>\nNow B.\n</think>\nLooking up B too.\n" + b
    assert pt.messages[1]["text"] == text
    assert "EmwK" not in text and "calls_at" not in pt.messages[1]  # the calls are not all at the end
    assert pieces(pt, 1) == [("reason", "<think>\nFirst look up A.\n</think>\n"), ("action", a + "\n"),
                             ("reason", "<think>\nNow B.\n</think>\n"), ("reason", "Looking up B too.\n"),
                             ("action", b)]
    assert export("anthropic", pt.messages, None)["messages"][1]["content"] == blocks


def test_tool_results_and_text_in_one_user_message_split_and_merge_back() -> None:
    payload = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Run it."}, {"type": "text", "text": "Twice."}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "run", "input": {}},
            {"type": "tool_use", "id": "t2", "name": "run", "input": {"again": True}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "out"},
                                                                      {"type": "text", "text": "err"}]},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True},
            {"type": "text", "text": "Observation: both ran."}]},
        {"role": "assistant", "content": "Done."}]}
    pt = check("anthropic", payload)
    assert [(m["role"], m["text"]) for m in pt.messages] == [
        ("user", "Run it.\nTwice."), ("assistant", block("run", {}) + "\n" + block("run", {"again": True})),
        ("tool", "out\nerr"), ("tool", ""), ("user", "Observation: both ran."), ("assistant", "Done.")]
    assert pt.messages[3] == {"role": "tool", "text": "", "tool_call_id": "t2", "is_error": True}
    assert pieces(pt, 4) == [("observation", "Observation: both ran.")]
    out = export("anthropic", pt.messages, None)["messages"]
    assert [m["role"] for m in out] == ["user", "assistant", "user", "assistant"]
    assert out[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "out\nerr"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "", "is_error": True},
        {"type": "text", "text": "Observation: both ran."}]


def test_export_does_not_depend_on_how_the_database_orders_keys() -> None:
    payload = json.loads(json.dumps(WEATHER))
    payload["messages"][1]["content"][2]["input"] = {"zeta": 1, "alpha": {"y": [1, 2.5], "b": None}, "mid": "x"}
    payload["messages"][1]["content"][1]["citations"] = None
    pt = check("anthropic", payload)
    stored = jsonb_order(pt.messages)
    assert dumps(stored) != dumps(pt.messages)  # the reordering is real
    back = parse("anthropic", json.loads(json.dumps(export("anthropic", stored, pt.tools))))
    assert [m["text"] for m in back.messages] == [m["text"] for m in pt.messages]
    assert canonical_sha256(back.messages) == canonical_sha256(pt.messages)
    assert back.spans == pt.spans


def test_messages_from_another_format_export_as_text_and_tool_use() -> None:
    pt = parse("openai", {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"}]})
    out = export("anthropic", pt.messages, None)
    again = parse("anthropic", json.loads(json.dumps(out)))
    assert [m["text"] for m in again.messages] == [m["text"] for m in pt.messages]
    assert again.spans == pt.spans


def test_tool_results_are_sanitized_not_refused(client) -> None:  # type: ignore[no-untyped-def]
    payload = {"messages": [
        {"role": "user", "content": "cat the file"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "cat", "input": {}},
                                          {"type": "tool_use", "id": "t2", "name": "cat", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "ELF\x00\x00bin"},
            {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "half \ud800"}]}]}]}
    pt = check("anthropic", payload)
    assert [m["text"] for m in pt.messages[2:]] == ["ELF\ufffd\ufffdbin", "half \ufffd"]
    assert pt.sanitized == 3
    payload["messages"][2]["content"].pop()
    r = client.post("/v1/trajectories", json={"format": "anthropic", "source": "nul", **payload})
    assert r.status_code == 201, r.json()
    assert r.json()["sanitized"] == 2


def test_the_docs_example_ingests() -> None:
    page = (Path(__file__).parents[2] / "docs" / "agents.md").read_text(encoding="utf-8")
    section = page.split("### Anthropic Messages (`anthropic`)", 1)[1]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    pt = check(example["format"], {k: v for k, v in example.items() if k not in ("format", "source", "teacher_model")})
    assert [s["kind"] for s in pt.spans] == ["reason", "reason", "action", "observation", "action"]


@pytest.mark.parametrize(("payload", "field", "code"), [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
     "messages[0].content[0].type", "unsupported_content"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "image", "source": {}}]}]}]},
     "messages[2].content[0].content[0].type", "unsupported_content"),
    ({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search"}]}]},
     "messages[0].content[0].type", "unsupported_content"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]},
     "messages[0].content[0].tool_use_id", "unknown_tool_call_id"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}]},
     "messages[0].content[0].input", "missing_field"),
    ({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]}]},
     "messages[1].content[0].is_error", "invalid_type"),
    ({"messages": [{"role": "assistant", "content": [{"type": "thinking", "signature": "s"}]}]},
     "messages[0].content[0].thinking", "missing_field"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role", "unknown_role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_field"),
    ({"messages": []}, "messages", "empty"),
    ({"system": 3, "messages": [{"role": "user", "content": "q"}]}, "system", "invalid_type"),
    ({"messages": [{"role": "assistant", "content": [{"type": "text", "text": "a\x00b"}]}]},
     "messages[0].content[0].text", "invalid_character"),
])
def test_bad_payloads_name_the_field(payload: dict[str, Any], field: str, code: str) -> None:
    err = error_of("anthropic", payload)
    assert (err["field"], err["code"]) == (field, code), err


_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = st.lists(st.one_of(st.text(_CHARS, max_size=6), st.sampled_from(
    ["<think>", "</think>", "\n", "Thought: ", "Final Answer: ", "<tool_call>", "🙂"])), max_size=5).map("".join)
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
                    max_leaves=8)


@st.composite
def conversations(draw: st.DrawFn) -> dict[str, Any]:
    """Anthropic payloads: blocks in any order (interleaved thinking, redacted, empty texts), inputs as
    objects or JSON strings, tool results (string, blocks, is_error, dirty bytes) mixed with text."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": draw(TEXT)}]
    n = 0
    for _ in range(draw(st.integers(1, 3))):
        blocks, ids = [], []
        for kind in draw(st.lists(st.sampled_from(["thinking", "redacted_thinking", "text", "tool_use"]), max_size=5)):
            if kind == "tool_use":
                n += 1
                ids.append(f"toolu_{n}")
                given_input = draw(st.one_of(st.dictionaries(TEXT, JSON, max_size=3),
                                             st.dictionaries(TEXT, JSON, max_size=3).map(json.dumps)))
                name = draw(TEXT.filter(bool))
                blocks.append({"type": "tool_use", "id": ids[-1], "name": name, "input": given_input})
            elif kind == "thinking":
                blocks.append({"type": "thinking", "thinking": draw(TEXT), "signature": draw(TEXT)})
            elif kind == "redacted_thinking":
                blocks.append({"type": "redacted_thinking", "data": draw(TEXT)})
            else:
                cited = {"citations": None} if draw(st.booleans()) else {}
                blocks.append({"type": "text", "text": draw(TEXT), **cited})
        messages.append({"role": "assistant", "content": blocks if blocks or draw(st.booleans()) else draw(TEXT)})
        results: list[dict[str, Any]] = []
        for tid in draw(st.permutations(ids)):
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tid}
            if draw(st.booleans()):
                result["content"] = draw(st.one_of(TEXT, st.lists(TEXT.map(lambda t: {"type": "text", "text": t}),
                                                                max_size=2), st.just("out\x00\ud800")))
            if draw(st.booleans()):
                result["is_error"] = draw(st.booleans())
            results.append(result)
        texts = [{"type": "text", "text": draw(TEXT)} for _ in range(draw(st.integers(0 if results else 1, 2)))]
        messages.append({"role": "user", "content": results + texts if draw(st.booleans()) else texts + results})
    payload: dict[str, Any] = {"messages": messages[:-1] if draw(st.booleans()) else messages}
    if draw(st.booleans()):
        payload["system"] = draw(st.one_of(TEXT, st.lists(TEXT.map(lambda t: {"type": "text", "text": t}), max_size=2)))
    return payload


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(conversations())
def test_generated_conversations_round_trip_through_jsonb_order(payload: dict[str, Any]) -> None:
    pt = check("anthropic", payload)
    back = parse("anthropic", json.loads(json.dumps(export("anthropic", jsonb_order(pt.messages), pt.tools))))
    assert canonical_sha256(back.messages) == canonical_sha256(pt.messages)
    assert back.spans == pt.spans and back.sanitized == 0


def _coverage(messages: list[dict[str, Any]], spans: list[dict[str, Any]]) -> list[list[str | None]]:
    """The kind of every character of every message (None where no span covers it)."""
    out: list[list[str | None]] = [[None] * len(m["text"]) for m in messages]
    for s in spans:
        for k in range(s["start"], s["end"]):
            out[s["message"]][k] = s["kind"]
    return out


def test_real_claude_logs_are_here() -> None:
    assert len(LOGS) >= 3


@pytest.mark.parametrize("path", LOGS, ids=lambda p: p.stem)
def test_real_claude_log_ingests_segments_to_gold_and_round_trips(client, path: Path) -> None:  # type: ignore[no-untyped-def]
    sample = json.loads(path.read_text())
    r = client.post("/v1/trajectories", json=sample["request"])
    assert r.status_code == 201, r.json()
    stored = client.get(f"/v1/trajectories/{r.json()['id']}").json()
    assert _coverage(stored["messages"], stored["spans"]) == _coverage(stored["messages"], sample["gold_spans"])
    exported = client.get(f"/v1/trajectories/{r.json()['id']}/export").json()
    again = client.post("/v1/trajectories", json={**exported, "source": "re-ingest"})
    assert again.status_code == 201, again.json()
    assert again.json()["content_sha256"] == r.json()["content_sha256"]
    assert client.get(f"/v1/trajectories/{again.json()['id']}").json()["spans"] == stored["spans"]
    raw = sample["request"]["messages"]
    kept = [b for m in raw if isinstance(m["content"], list) for b in m["content"]
            if b["type"] in ("thinking", "redacted_thinking")]
    out = [b for m in exported["messages"] if isinstance(m["content"], list) for b in m["content"]
           if b["type"] in ("thinking", "redacted_thinking")]
    assert out == kept  # signatures and redacted data byte for byte, in order


TOOLS_SHAPE = "tools: must be a list of {type: 'function', function: {...}}"


def test_openai_dataset_export_of_real_logs_passes_the_validator(client) -> None:  # type: ignore[no-untyped-def]
    interleaved = {"format": "anthropic", "source": "mix", "messages": [
        {"role": "user", "content": "A and B?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "A first.", "signature": "s"},
            {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "A"}},
            {"type": "thinking", "thinking": "Now B.", "signature": "s"},
            {"type": "tool_use", "id": "t2", "name": "lookup", "input": {"q": "B"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a"},
                                     {"type": "tool_result", "tool_use_id": "t2", "content": "b"}]},
        {"role": "assistant", "content": "a and b"}]}
    for body in [*(json.loads(p.read_text())["request"] for p in LOGS), interleaved]:
        r = client.post("/v1/trajectories", json=body)
        assert r.status_code == 201, r.text
        approve(client, r.json()["id"])
    ds = create(client, eval_fraction=0).json()
    lines = [json.loads(x) for x in client.get(f"/v1/datasets/{ds['id']}/export?format=openai").text.splitlines()]
    assert len(lines) == len(LOGS) + 1
    for line in lines:  # tool definitions come out in the chat shape (chat_tools), so every line passes as is
        assert openai_line_errors(line) == [], line
    calls = [c for line in lines for m in line["messages"] for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for line in lines for m in line["messages"] if m["role"] == "tool"]
    assert answered and set(answered) <= {c["id"] for c in calls}  # tool messages answer kept calls
