"""OpenAI Responses format ("openai-responses"): items into one turn, reasoning summary / content /
encrypted content, function and custom tool calls, errors, export independent of key order, and
real Responses API logs through the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.formats import canonical_sha256, export, parse
from contract.formats.parts import chat_tools
from tests.datasets.helpers import approve, create
from tests.datasets.openai_validator import openai_line_errors
from tests.trajectories._checks import check, dumps, error_of, pieces

LOGS = sorted((Path(__file__).parents[1] / "data" / "logs" / "openai-responses").glob("*.json"))
FMT = "openai-responses"


def block(name: str, arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


def jsonb_order(value: Any) -> Any:
    """`value` with every object's keys in the order Postgres jsonb returns them (length, then bytes)."""
    if isinstance(value, dict):
        return {k: jsonb_order(value[k]) for k in sorted(value, key=lambda k: (len(k.encode()), k.encode()))}
    if isinstance(value, list):
        return [jsonb_order(v) for v in value]
    return value


REASONING = {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAABo-enc==",
             "summary": [{"type": "summary_text", "text": "**Plan**\n\nLook it up."},
                         {"type": "summary_text", "text": "Then answer 🌧️."}]}
CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
        "arguments": '{"city":"Zürich","unit":"c"}', "status": "completed"}
WEATHER = {
    "instructions": "Be brief.",
    "input": [{"role": "developer", "content": "Use tools."},
              {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}],
    "output": [REASONING,
               {"type": "message", "id": "msg_1", "role": "assistant", "phase": "commentary", "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
               CALL,
               {"type": "function_call_output", "call_id": "call_1", "output": "12°C"},
               {"type": "message", "role": "assistant", "content": [
                   {"type": "output_text", "text": "It is 12°C.", "annotations": [], "logprobs": []}]}],
    "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
}


def test_one_turn_from_reasoning_message_and_call_renders_like_openai() -> None:
    pt = check(FMT, WEATHER)
    assert [m["role"] for m in pt.messages] == ["system", "system", "user", "assistant", "tool", "assistant"]
    think = "<think>\n**Plan**\n\nLook it up.\n\nThen answer 🌧️.\n</think>\n"
    call = block("get_weather", {"city": "Zürich", "unit": "c"})
    assert pt.messages[3]["text"] == think + "Checking.\n" + call
    assert pt.messages[3]["tool_calls"] == [{"id": "call_1", "name": "get_weather",
                                             "arguments": {"city": "Zürich", "unit": "c"},
                                             "raw_arguments": '{"city":"Zürich","unit":"c"}'}]
    assert pt.messages[3]["parts"][0] == {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAABo-enc==",
                                          "length": 38, "summary_lengths": [21, 15]}
    assert "gAAAA" not in pt.messages[3]["text"]
    assert pt.messages[4] == {"role": "tool", "text": "12°C", "tool_call_id": "call_1"}
    as_openai = parse("openai", {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "reasoning": "**Plan**\n\nLook it up.\n\nThen answer 🌧️.", "content": "Checking.",
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": CALL["arguments"]}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12°C"},
        {"role": "assistant", "content": "It is 12°C."}]})
    assert [m["text"] for m in pt.messages] == [m["text"] for m in as_openai.messages]
    assert pt.spans == as_openai.spans
    assert pieces(pt, 3) == [("reason", think), ("reason", "Checking.\n"), ("action", call)]
    assert pieces(pt, 5) == [("action", "It is 12°C.")]


def test_export_rebuilds_items_verbatim_and_splits_input_from_output() -> None:
    pt = check(FMT, WEATHER)
    out = export(FMT, pt.messages, pt.tools)
    assert out["instructions"] == "Be brief."
    assert out["input"][:2] == [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather?"}]
    assert out["input"][2:5] == WEATHER["output"][:3]  # reasoning, commentary, call: every field as received
    assert out["input"][5] == {"type": "function_call_output", "call_id": "call_1", "output": "12°C"}
    assert out["output"] == WEATHER["output"][4:]


def test_reasoning_content_empty_reasoning_custom_tool_calls_and_interleaving() -> None:
    patch = "*** Begin Patch\n*** Update File: a.py\n+print('hi')\n*** End Patch"
    items = [
        {"type": "reasoning", "id": "rs_0", "summary": [], "encrypted_content": "enc0"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "short"}],
         "content": [{"type": "reasoning_text", "text": "raw step 1"}, {"type": "reasoning_text", "text": "step 2"}]},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "c1", "name": "apply_patch", "input": patch},
        {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Now test."}]},
        {"type": "function_call", "call_id": "c2", "name": "shell", "arguments": "not json"},
    ]
    payload = {"input": "Fix a.py", "output": [
        *items,
        {"type": "custom_tool_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "Done!"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "ok"}]}
    pt = check(FMT, payload)
    p, s = block("apply_patch", patch), block("shell", "not json")
    assert pt.messages[1]["text"] == ("<think>\nraw step 1\nstep 2\n</think>\n" + p
                                      + "\n<think>\nNow test.\n</think>\n" + s)
    assert pieces(pt, 1) == [("reason", "<think>\nraw step 1\nstep 2\n</think>\n"), ("action", p + "\n"),
                             ("reason", "<think>\nNow test.\n</think>\n"), ("action", s)]
    assert pt.messages[1]["tool_calls"][0] == {"id": "c1", "name": "apply_patch", "arguments": patch}
    assert pt.messages[2] == {"role": "tool", "text": "Done!", "tool_call_id": "c1"}
    out = export(FMT, pt.messages, None)
    assert out["input"][:6] == [{"role": "user", "content": "Fix a.py"}, *items]
    assert out["input"][6:] == [{"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"},
                                {"type": "function_call_output", "call_id": "c2", "output": "ok"}]
    assert "output" not in out  # the log ends on tool output: no response items after it


def test_export_does_not_depend_on_how_the_database_orders_keys() -> None:
    payload = json.loads(json.dumps(WEATHER))
    payload["output"][2]["arguments"] = '{"zeta": 1, "alpha": {"y": [1, 2.5]}, "mid": "x"}'
    pt = check(FMT, payload)
    stored = jsonb_order(pt.messages)
    assert dumps(stored) != dumps(pt.messages)
    back = parse(FMT, json.loads(json.dumps(export(FMT, stored, pt.tools))))
    assert [m["text"] for m in back.messages] == [m["text"] for m in pt.messages]
    assert canonical_sha256(back.messages) == canonical_sha256(pt.messages)
    assert back.spans == pt.spans


def test_messages_from_another_format_export_as_items() -> None:
    pt = parse("openai", {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"}, {"role": "assistant", "content": "R."}]})
    again = parse(FMT, json.loads(json.dumps(export(FMT, pt.messages, None))))
    assert [m["text"] for m in again.messages] == [m["text"] for m in pt.messages]
    assert again.spans == pt.spans


def test_call_outputs_are_sanitized_not_refused() -> None:
    payload = {"input": "cat it", "output": [
        {"type": "function_call", "call_id": "c1", "name": "cat", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ELF\x00bin"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "sh", "input": "cat b"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "\udc00!"}]}]}
    pt = check(FMT, payload)
    assert [m["text"] for m in pt.messages if m["role"] == "tool"] == ["ELF\ufffdbin", "\ufffd!"]
    assert pt.sanitized == 2
    assert error_of(FMT, {"input": "q\x00"})["code"] == "invalid_character"  # trained text stays strict


def test_the_docs_example_ingests() -> None:
    page = (Path(__file__).parents[2] / "docs" / "agents.md").read_text(encoding="utf-8")
    section = page.split("### OpenAI Responses (`openai-responses`)", 1)[1]
    example = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    pt = check(example["format"], {k: v for k, v in example.items() if k not in ("format", "source", "teacher_model")})
    assert [s["kind"] for s in pt.spans] == ["reason", "action", "observation", "action"]


@pytest.mark.parametrize(("payload", "field", "code"), [
    ({}, "input", "missing_field"),
    ({"input": []}, "input", "empty"),
    ({"input": {"role": "user"}}, "input", "invalid_type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].type", "unsupported_content"),
    ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input[0].type", "unsupported_content"),
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]},
     "input[0].call_id", "unknown_tool_call_id"),
    ({"output": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "output[0].arguments", "missing_field"),
    ({"output": [{"type": "custom_tool_call", "call_id": "c", "name": "f", "input": 3}]},
     "output[0].input", "invalid_type"),
    ({"output": [{"type": "reasoning", "summary": [{"type": "summary_text"}]}]},
     "output[0].summary[0].text", "missing_field"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "unknown_role"),
    ({"input": [{"type": "message", "role": "assistant"}]}, "input[0].content", "missing_field"),
    ({"instructions": ["x"], "input": "q"}, "instructions", "invalid_type"),
])
def test_bad_payloads_name_the_field(payload: dict[str, Any], field: str, code: str) -> None:
    err = error_of(FMT, payload)
    assert (err["field"], err["code"]) == (field, code), err


_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = st.lists(st.one_of(st.text(_CHARS, max_size=6), st.sampled_from(
    ["<think>", "</think>", "\n", "Thought: ", "Final Answer: ", "<tool_call>", "🙂"])), max_size=5).map("".join)
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
                    max_leaves=8)


def _parts(draw: st.DrawFn, kind: str, lo: int = 0) -> list[dict[str, Any]]:
    return [{"type": kind, "text": draw(TEXT)} for _ in range(draw(st.integers(lo, 3)))]


@st.composite
def runs(draw: st.DrawFn) -> dict[str, Any]:
    """Responses payloads: turns of reasoning (summary, content, encrypted only), assistant messages
    (string or parts, refusals), function calls (arguments as JSON text in any spelling, objects, not
    JSON) and custom calls, outputs (string, parts, dirty bytes), split anywhere into input/output."""
    first = draw(TEXT) if draw(st.booleans()) else _parts(draw, "input_text", 1)
    items: list[dict[str, Any]] = [{"role": draw(st.sampled_from(["user", "developer"])), "content": first}]
    n = 0
    for _ in range(draw(st.integers(1, 3))):
        calls = []
        for kind in draw(st.lists(st.sampled_from(["reasoning", "message", "function_call", "custom"]), max_size=5)):
            if kind == "reasoning":
                item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{draw(TEXT)}",
                                        "summary": _parts(draw, "summary_text")}
                if draw(st.booleans()):
                    item["content"] = _parts(draw, "reasoning_text")
                if draw(st.booleans()):
                    item["encrypted_content"] = draw(TEXT)
            elif kind == "message":
                parts = [{"type": draw(st.sampled_from(["output_text", "refusal"])), "annotations": []}
                         for _ in range(draw(st.integers(0, 2)))]
                for part in parts:
                    part["refusal" if part["type"] == "refusal" else "text"] = draw(TEXT)
                item = {"type": "message", "role": "assistant", "content": parts if draw(st.booleans()) else draw(TEXT)}
            else:
                n += 1
                calls.append((f"call_{n}", "function_call" if kind == "function_call" else "custom_tool_call"))
                item = {"type": calls[-1][1], "call_id": calls[-1][0], "name": draw(TEXT.filter(bool))}
                if kind == "custom":
                    item["input"] = draw(TEXT)
                else:
                    value = draw(st.dictionaries(TEXT, JSON, max_size=3))
                    item["arguments"] = draw(st.sampled_from([
                        json.dumps(value), json.dumps(value, separators=(",", ":"), ensure_ascii=False),
                        "not json {", value]))
            items.append(item)
        for call_id, kind in draw(st.permutations(calls)):
            output = draw(st.one_of(TEXT, st.just("bin\x00\udfff"), st.none()))
            output = _parts(draw, "input_text") if output is None else output
            items.append({"type": kind + "_output", "call_id": call_id, "output": output})
        if draw(st.booleans()):
            items.append({"role": "user", "content": draw(TEXT)})
    cut = draw(st.integers(1, len(items)))
    payload: dict[str, Any] = {"input": items[:cut]}
    if cut < len(items):
        payload["output"] = items[cut:]
    if draw(st.booleans()):
        payload["instructions"] = draw(TEXT)
    return payload


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(runs())
def test_generated_runs_round_trip_through_jsonb_order(payload: dict[str, Any]) -> None:
    pt = check(FMT, payload)
    back = parse(FMT, json.loads(json.dumps(export(FMT, jsonb_order(pt.messages), pt.tools))))
    assert canonical_sha256(back.messages) == canonical_sha256(pt.messages)
    assert back.spans == pt.spans and back.sanitized == 0


def _coverage(messages: list[dict[str, Any]], spans: list[dict[str, Any]]) -> list[list[str | None]]:
    out: list[list[str | None]] = [[None] * len(m["text"]) for m in messages]
    for s in spans:
        for k in range(s["start"], s["end"]):
            out[s["message"]][k] = s["kind"]
    return out


def test_real_responses_logs_are_here() -> None:
    assert len(LOGS) >= 3


@pytest.mark.parametrize("path", LOGS, ids=lambda p: p.stem)
def test_real_responses_log_ingests_segments_to_gold_and_round_trips(client, path: Path) -> None:  # type: ignore[no-untyped-def]
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
    items = [*sample["request"].get("input", []), *sample["request"]["output"]]
    assert [i for i in exported["input"] + exported["output"] if i.get("type") == "reasoning"] == [
        i for i in items if i.get("type") == "reasoning"]  # encrypted content and summaries as received


TOOLS_SHAPE = "tools: must be a list of {type: 'function', function: {...}}"


def test_openai_dataset_export_of_real_logs_passes_the_validator(client) -> None:  # type: ignore[no-untyped-def]
    interleaved = {"format": "openai-responses", "source": "mix", "input": "A and B?", "output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "A first."}]},
        {"type": "function_call", "call_id": "t1", "name": "lookup", "arguments": '{"q": "A"}'},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Now B."}]},
        {"type": "custom_tool_call", "call_id": "t2", "name": "lookup", "input": "B"},
        {"type": "function_call_output", "call_id": "t1", "output": "a"},
        {"type": "custom_tool_call_output", "call_id": "t2", "output": "b"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a and b"}]}]}
    for body in [*(json.loads(p.read_text())["request"] for p in LOGS), interleaved]:
        r = client.post("/v1/trajectories", json=body)
        assert r.status_code == 201, r.text
        approve(client, r.json()["id"])
    ds = create(client, eval_fraction=0).json()
    lines = [json.loads(x) for x in client.get(f"/v1/datasets/{ds['id']}/export?format=openai").text.splitlines()]
    assert len(lines) == len(LOGS) + 1
    for line in lines:  # tool definitions are exported as given; chat_tools writes them in chat shape
        assert set(openai_line_errors(line)) <= {TOOLS_SHAPE}, line
        assert openai_line_errors({**line, "tools": chat_tools(line.get("tools"))}) == [], line
    calls = [c for line in lines for m in line["messages"] for c in m.get("tool_calls", [])]
    answered = [m["tool_call_id"] for line in lines for m in line["messages"] if m["role"] == "tool"]
    assert answered and set(answered) <= {c["id"] for c in calls}  # tool messages answer kept calls


def test_chat_tools_rewrites_anthropic_and_responses_definitions() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    chat = {"type": "function", "function": {"name": "c", "parameters": schema}}
    assert chat_tools([
        chat,
        {"name": "a", "description": "A.", "input_schema": schema, "cache_control": {"type": "ephemeral"}},
        {"type": "function", "name": "r", "description": None, "parameters": schema, "strict": True},
        {"type": "custom", "name": "apply_patch", "description": "Patch."},
        {"type": "web_search_20250305", "name": "web_search"}, {"type": "web_search"}, "junk",
    ]) == [chat,
           {"type": "function", "function": {"name": "a", "description": "A.", "parameters": schema}},
           {"type": "function", "function": {"name": "r", "parameters": schema, "strict": True}},
           {"type": "function", "function": {"name": "apply_patch", "description": "Patch."}}]
    assert chat_tools(None) is None
