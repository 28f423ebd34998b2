"""OpenAI chat format: canonical text, auto spans, round trips and errors."""

from __future__ import annotations

import json

import pytest

from contract.formats import FORMATS, canonical_sha256, export, parse
from tests.trajectories._checks import check, dumps, error_of, pieces

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def call(cid: str | None, name: str, arguments: str) -> dict:
    out = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {"id": cid, **out} if cid is not None else out


def block(name: str, arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


def test_registry_lists_the_first_four_formats() -> None:
    assert FORMATS[:4] == ("openai", "react", "smolagents", "sharegpt")


def test_weather_sample_text_structure_and_spans() -> None:
    payload = {"messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in NYC?"},
        {"role": "assistant", "content": "I should look it up.",
         "tool_calls": [call("call_1", "get_weather", '{"city":"NYC"}')]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c":21}'},
        {"role": "assistant", "content": "It is 21°C."},
    ], "tools": TOOLS}
    pt = check("openai", payload)
    assert pt.tools == TOOLS
    assert pt.messages[2] == {
        "role": "assistant",
        "text": "I should look it up.\n" + block("get_weather", {"city": "NYC"}),
        "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"city": "NYC"},
                        "raw_arguments": '{"city":"NYC"}'}],
        "calls_at": len("I should look it up.\n"),
    }
    assert pt.messages[3] == {"role": "tool", "text": '{"temp_c":21}', "tool_call_id": "call_1"}
    assert pieces(pt, 2) == [("reason", "I should look it up.\n"), ("action", block("get_weather", {"city": "NYC"}))]
    assert pieces(pt, 3) == [("observation", '{"temp_c":21}')]
    assert pieces(pt, 4) == [("action", "It is 21°C.")]
    assert [s["message"] for s in pt.spans] == [2, 2, 3, 4]


def test_parallel_calls_reasoning_and_emoji_offsets() -> None:
    payload = {"messages": [
        {"role": "user", "content": "Compare 🌧️ in Zürich and 東京"},
        {"role": "assistant", "reasoning_content": "Two cities → two calls 🤔", "content": "",
         "tool_calls": [call("a", "get_weather", '{"city": "Zürich"}'),
                        call("b", "get_weather", '{"city": "東京"}')]},
        {"role": "tool", "tool_call_id": "a", "content": "🌧️ 12°C"},
        {"role": "tool", "tool_call_id": "b", "content": "☀️ 20°C"},
        {"role": "assistant", "reasoning": "Zürich is colder.", "content": "Zürich 🌧️ is colder than 東京."},
    ]}
    pt = check("openai", payload)
    think = "<think>\nTwo cities → two calls 🤔\n</think>\n"
    b1, b2 = block("get_weather", {"city": "Zürich"}), block("get_weather", {"city": "東京"})
    assert pt.messages[1]["text"] == think + b1 + "\n" + b2
    assert pieces(pt, 1) == [("reason", think), ("action", b1 + "\n"), ("action", b2)]
    assert pieces(pt, 2) == [("observation", "🌧️ 12°C")]
    assert pieces(pt, 4) == [("reason", "<think>\nZürich is colder.\n</think>\n"),
                             ("action", "Zürich 🌧️ is colder than 東京.")]
    span = pt.spans[-1]  # code-point offsets: the slice is exactly the answer
    assert pt.messages[4]["text"][span["start"] : span["end"]] == "Zürich 🌧️ is colder than 東京."


def test_content_parts_null_content_empty_final_and_consecutive_assistants() -> None:
    payload = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]},
        {"role": "assistant", "content": "Let me think about which tool fits."},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "search", '{"q": "x"}')]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "result"}]},
        {"role": "assistant", "content": ""},
    ]}
    pt = check("openai", payload)
    assert pt.messages[0]["text"] == "Part one.\nPart two."
    assert pieces(pt, 1) == [("reason", "Let me think about which tool fits.")]  # followed by an assistant
    assert pieces(pt, 2) == [("action", block("search", {"q": "x"}))]
    assert pt.messages[4] == {"role": "assistant", "text": ""}
    assert pieces(pt, 4) == []


def test_legacy_function_call_and_function_role() -> None:
    payload = {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": None, "function_call": {"name": "calc", "arguments": '{"e": "2+2"}'}},
        {"role": "function", "name": "calc", "content": "4"},
        {"role": "assistant", "content": "4"},
    ]}
    pt = check("openai", payload)
    assert pt.messages[1]["tool_calls"] == [{"id": None, "name": "calc", "arguments": {"e": "2+2"},
                                              "raw_arguments": '{"e": "2+2"}'}]
    assert pt.messages[2] == {"role": "tool", "text": "4", "name": "calc"}


def test_fireact_openai_shape_observation_in_user_turn() -> None:
    payload = {"messages": [
        {"role": "user", "content": "Question: Who wrote Dune?"},
        {"role": "assistant", "content": "Thought 1: I should search Dune.\nAction 1: Search[Dune]"},
        {"role": "user", "content": "Observation 1: Dune is a 1965 novel by Frank Herbert."},
        {"role": "assistant", "content": "Thought 2: Found it.\nAction 2: Finish[Frank Herbert]"},
    ]}
    pt = check("openai", payload)
    assert pieces(pt, 0) == []
    assert pieces(pt, 1) == [("reason", "Thought 1: I should search Dune.\n"), ("action", "Action 1: Search[Dune]")]
    assert pieces(pt, 2) == [("observation", "Observation 1: Dune is a 1965 novel by Frank Herbert.")]
    assert pieces(pt, 3) == [("reason", "Thought 2: Found it.\n"), ("action", "Action 2: Finish[Frank Herbert]")]


def test_inline_think_and_inline_tool_call_text() -> None:
    inline = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    payload = {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<think>hmm</think>\n\nCalling f.\n" + inline + "\n"},
        {"role": "user", "content": "ok"},
        {"role": "assistant", "content": "<think>\ndone\n</think>\nBye."},
    ]}
    pt = check("openai", payload)
    assert pieces(pt, 1) == [("reason", "<think>hmm</think>\n\n"), ("reason", "Calling f.\n"),
                             ("action", inline + "\n")]
    assert pieces(pt, 3) == [("reason", "<think>\ndone\n</think>\n"), ("action", "Bye.")]


@pytest.mark.parametrize("arguments, kept", [
    ('{"a": [1, 2.5, null, true]}', {"a": [1, 2.5, None, True]}),
    ("not json {", "not json {"),
    ("", ""),
    ('"1"', "1"),
    ("NaN", "NaN"),
    ("1e5", 100000.0),
])
def test_arguments_are_parsed_when_json_else_kept_raw(arguments: str, kept: object) -> None:
    payload = {"messages": [{"role": "user", "content": "x"},
                            {"role": "assistant", "tool_calls": [call("k", "f", arguments)]}]}
    pt = check("openai", payload)
    assert pt.messages[1]["tool_calls"][0]["arguments"] == kept
    assert type(pt.messages[1]["tool_calls"][0]["arguments"]) is type(kept)


def test_arguments_given_as_object_and_call_without_id() -> None:
    payload = {"messages": [{"role": "user", "content": "x"},
                            {"role": "assistant", "tool_calls": [
                                {"type": "function", "function": {"name": "f", "arguments": {"k": "v"}}}]},
                            {"role": "tool", "content": "done"}]}
    pt = check("openai", payload)
    assert pt.messages[1]["tool_calls"] == [{"id": None, "name": "f", "arguments": {"k": "v"}}]


def test_developer_role_and_export_shape() -> None:
    payload = {"messages": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q"},
                            {"role": "assistant", "content": "a", "tool_calls": [call("1", "f", "{}")]},
                            {"role": "tool", "tool_call_id": "1", "name": "f", "content": "r"}]}
    pt = check("openai", payload)
    out = export("openai", pt.messages, None)
    assert out == {"messages": [
        {"role": "system", "content": "rules"}, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a",
         "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "r", "tool_call_id": "1", "name": "f"}]}


def test_sha_is_stable_and_content_sensitive() -> None:
    a = [{"role": "user", "text": "é"}, {"role": "assistant", "text": "x", "tool_calls": []}]
    b = [{"text": "é", "role": "user"}, {"tool_calls": [], "text": "x", "role": "assistant"}]
    assert canonical_sha256(a) == canonical_sha256(b)
    assert canonical_sha256(a) != canonical_sha256([{"role": "user", "text": "e"}, a[1]])
    assert len(canonical_sha256(a)) == 64
    assert dumps(parse("openai", {"messages": [{"role": "user", "content": " x \n"}]}).messages) == \
        '[{"role": "user", "text": " x \\n"}]'


@pytest.mark.parametrize("payload, field, code", [
    ({}, "messages", "missing_field"),
    ({"messages": "hi"}, "messages", "invalid_type"),
    ({"messages": []}, "messages", "empty"),
    ({"messages": [1]}, "messages[0]", "invalid_type"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "missing_field"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "unknown_role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].type", "unsupported_content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]},
     "messages[0].content[0].text", "missing_field"),
    ({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages[0].content", "invalid_character"),
    ({"messages": [{"role": "user", "content": "a\ud800"}]}, "messages[0].content", "invalid_character"),
    ({"messages": [{"role": "assistant", "tool_calls": {}}]}, "messages[0].tool_calls", "invalid_type"),
    ({"messages": [{"role": "assistant", "tool_calls": ["x"]}]}, "messages[0].tool_calls[0]", "invalid_type"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "type": "function"}]}]},
     "messages[0].tool_calls[0].function", "missing_field"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"arguments": "{}"}}]}]},
     "messages[0].tool_calls[0].function.name", "missing_field"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "", "arguments": "{}"}}]}]},
     "messages[0].tool_calls[0].function.name", "invalid_tool_call"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f"}}]}]},
     "messages[0].tool_calls[0].function.arguments", "missing_field"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": 3}}]}]},
     "messages[0].tool_calls[0].function.arguments", "invalid_type"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": 7, "function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[0].tool_calls[0].id", "invalid_type"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"type": "custom", "custom": {}}]}]},
     "messages[0].tool_calls[0].type", "invalid_tool_call"),
    ({"messages": [{"role": "assistant", "tool_calls": [call("1", "f", '{"a": "\\u0000"}')]}]},
     "messages[0].tool_calls[0].function.arguments", "invalid_value"),
    ({"messages": [{"role": "assistant", "tool_calls": [call("1", "f", "{}")],
                    "function_call": {"name": "g", "arguments": "{}"}}]},
     "messages[0].function_call", "conflicting_fields"),
    ({"messages": [{"role": "assistant", "reasoning_content": 3}]}, "messages[0].reasoning_content", "invalid_type"),
    ({"messages": [{"role": "assistant", "tool_calls": [call("a", "f", "{}")]},
                   {"role": "tool", "tool_call_id": "b", "content": "x"}]},
     "messages[1].tool_call_id", "unknown_tool_call_id"),
    ({"messages": [{"role": "tool", "tool_call_id": "a", "content": "x"},
                   {"role": "assistant", "tool_calls": [call("a", "f", "{}")]}]},
     "messages[0].tool_call_id", "unknown_tool_call_id"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": {"a": 1}}, "tools", "invalid_type"),
])
def test_errors_point_at_the_field(payload: dict, field: str, code: str) -> None:
    err = error_of("openai", payload)
    assert (err["field"], err["code"]) == (field, code), err


def test_unknown_format_and_non_object_payload() -> None:
    assert error_of("yaml", {})["field"] == "format"
    assert error_of("openai", [])["field"] == "payload"


def test_export_gives_arguments_as_received_whatever_the_database_did_to_keys() -> None:
    """tau-bench style GPT-4o calls: arguments strings with keys out of sorted order, an object, a
    non-JSON string; the stored messages' keys reordered as jsonb does; the export is the input."""
    from tests.contract.generated import jsonb_order

    messages = [
        {"role": "user", "content": "Cancel reservation EHGLP3."},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            call("call_a", "get_reservation_details", '{"reservation_id":"EHGLP3","user_id":"emma_kim_9957"}'),
            call("call_b", "think", '{\n  "thought": "x",\n  "a": 1\n}'),
            {"id": "call_c", "type": "function",
             "function": {"name": "f", "arguments": {"zz": 1, "a": {"y": 1, "b": 2}}}},
            call("call_d", "g", "not json {")]},
        {"role": "tool", "tool_call_id": "call_d", "content": "r4"},
        {"role": "tool", "tool_call_id": "call_a", "content": "r1"},
    ]
    pt = check("openai", {"messages": messages})
    out = export("openai", jsonb_order(json.loads(json.dumps(pt.messages))), None)
    assert out["messages"][1]["tool_calls"] == messages[1]["tool_calls"]
    assert json.dumps(out["messages"][1]["tool_calls"]) == json.dumps(messages[1]["tool_calls"])  # key order too
    assert parse("openai", out).messages == pt.messages  # re-posting it: no unknown_tool_call_id
