"""ShareGPT (LLaMA-Factory, AgentInstruct): roles, function calls, loss flags, round trips, errors."""

from __future__ import annotations

import json

import pytest

from contract.formats import export
from tests.trajectories._checks import check, error_of, pieces

WEATHER_BLOCK = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "NYC"}}\n</tool_call>'


def test_llama_factory_function_calling_sample() -> None:
    tools = [{"name": "get_weather", "parameters": {"type": "object"}}]
    payload = {
        "conversations": [
            {"from": "human", "value": "Weather in NYC?"},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "NYC"}}'},
            {"from": "observation", "value": '{"temp_c": 21}'},
            {"from": "gpt", "value": "It is 21°C."},
        ],
        "system": "You can call tools.",
        "tools": json.dumps(tools),
    }
    pt = check("sharegpt", payload)
    assert pt.tools == tools
    assert [(m["role"], m["text"]) for m in pt.messages] == [
        ("system", "You can call tools."), ("user", "Weather in NYC?"), ("assistant", WEATHER_BLOCK),
        ("tool", '{"temp_c": 21}'), ("assistant", "It is 21°C.")]
    assert pt.messages[2]["tool_calls"] == [{"id": None, "name": "get_weather", "arguments": {"city": "NYC"}}]
    assert pieces(pt, 2) == [("action", WEATHER_BLOCK)]
    assert pieces(pt, 3) == [("observation", '{"temp_c": 21}')]
    assert pieces(pt, 4) == [("action", "It is 21°C.")]
    out = export("sharegpt", pt.messages, pt.tools)
    assert out["system"] == "You can call tools." and json.loads(out["tools"]) == tools
    assert out["conversations"][1] == {"from": "function_call",
                                       "value": '{"name": "get_weather", "arguments": {"city": "NYC"}}'}


def test_agentinstruct_loss_flags_react_turns_and_observation_in_human_turn() -> None:
    payload = {"conversations": [
        {"from": "human", "loss": None, "value": "You are in a room. Your task is: find the key."},
        {"from": "gpt", "loss": False, "value": "OK."},
        {"from": "human", "loss": None, "value": "Observation: A desk and a drawer."},
        {"from": "gpt", "loss": True, "value": "Thought: The key may be in the drawer.\nAction: open drawer 1"},
        {"from": "human", "value": "Observation: You open the drawer. The key is inside. Thought: nice."},
        {"from": "gpt", "loss": True, "value": "Thought: Got it.\nAction: take key from drawer 1"},
    ]}
    pt = check("sharegpt", payload)
    assert pt.messages[0] == {"role": "user", "text": "You are in a room. Your task is: find the key."}
    assert pt.messages[1] == {"role": "assistant", "text": "OK.", "loss": False}
    assert pieces(pt, 1) == []
    assert pieces(pt, 2) == [("observation", "Observation: A desk and a drawer.")]
    assert pt.messages[3]["loss"] is True
    assert pieces(pt, 3) == [("reason", "Thought: The key may be in the drawer.\n"),
                             ("action", "Action: open drawer 1")]
    assert pieces(pt, 5) == [("reason", "Thought: Got it.\n"), ("action", "Action: take key from drawer 1")]
    out = export("sharegpt", pt.messages, None)
    assert [t.get("loss") for t in out["conversations"]] == [None, False, None, True, None, True]
    assert "loss" not in out["conversations"][0] and "system" not in out and "tools" not in out


def test_parallel_calls_tools_list_plain_gpt_reason_and_hermes_inline_calls() -> None:
    calls = [{"name": "lookup", "arguments": {"item": "plum"}}, {"name": "lookup", "arguments": {"item": "pear 🍐"}}]
    inline = '<tool_call>\n{"name": "lookup", "arguments": {"item": "fig"}}\n</tool_call>'
    payload = {
        "conversations": [
            {"from": "system", "value": ""},
            {"from": "human", "value": "Prices?"},
            {"from": "gpt", "value": "I will look both up."},
            {"from": "function_call", "value": json.dumps(calls, ensure_ascii=False)},
            {"from": "observation", "value": "2"},
            {"from": "observation", "value": "3"},
            {"from": "gpt", "value": "And a fig:\n" + inline + "\n"},
            {"from": "tool", "value": "5"},
            {"from": "gpt", "value": ""},
        ],
        "tools": [{"name": "lookup"}],
        "system": "",
    }
    pt = check("sharegpt", payload)
    assert pt.messages[0] == {"role": "system", "text": ""}
    assert pieces(pt, 2) == [("reason", "I will look both up.")]
    blocks = pt.messages[3]["text"].split("\n<tool_call>")
    assert len(blocks) == 2 and "pear 🍐" in pt.messages[3]["text"]
    assert [k for k, _ in pieces(pt, 3)] == ["action", "action"]
    assert pieces(pt, 6) == [("reason", "And a fig:\n"), ("action", inline + "\n")]
    assert pieces(pt, 8) == []
    assert isinstance(json.loads(export("sharegpt", pt.messages, None)["conversations"][3]["value"]), list)


@pytest.mark.parametrize("payload, field, code", [
    ({}, "conversations", "missing_field"),
    ({"conversations": []}, "conversations", "empty"),
    ({"conversations": [{"from": "bot", "value": "x"}]}, "conversations[0].from", "unknown_role"),
    ({"conversations": [{"value": "x"}]}, "conversations[0].from", "missing_field"),
    ({"conversations": [{"from": "gpt"}]}, "conversations[0].value", "missing_field"),
    ({"conversations": [{"from": "gpt", "value": ["x"]}]}, "conversations[0].value", "invalid_type"),
    ({"conversations": [{"from": "gpt", "value": "x", "loss": 0}]}, "conversations[0].loss", "invalid_type"),
    ({"conversations": [{"from": "function_call", "value": "get_weather(NYC)"}]},
     "conversations[0].value", "invalid_json"),
    ({"conversations": [{"from": "function_call", "value": '{"arguments": {}}'}]},
     "conversations[0].value.name", "invalid_tool_call"),
    ({"conversations": [{"from": "function_call", "value": '[{"name": "f", "arguments": {}}, 3]'}]},
     "conversations[0].value[1]", "invalid_tool_call"),
    ({"conversations": [{"from": "function_call", "value": '{"name": "f"}'}]},
     "conversations[0].value.arguments", "missing_field"),
    ({"conversations": [{"from": "function_call", "value": "[]"}]}, "conversations[0].value", "invalid_tool_call"),
    ({"conversations": [{"from": "function_call", "value": '{"name": "f", "arguments": "\\u0000"}'}]},
     "conversations[0].value", "invalid_value"),
    ({"conversations": [{"from": "gpt", "value": "x"}], "tools": "[{oops"}, "tools", "invalid_json"),
    ({"conversations": [{"from": "gpt", "value": "x"}], "tools": '{"name": "f"}'}, "tools", "invalid_type"),
    ({"conversations": [{"from": "gpt", "value": "x"}], "system": 1}, "system", "invalid_type"),
])
def test_errors(payload: dict, field: str, code: str) -> None:
    err = error_of("sharegpt", payload)
    assert (err["field"], err["code"]) == (field, code), err


def test_function_calls_survive_keys_reordered_by_the_database() -> None:
    """glaive-style calls whose argument keys are not in sorted order: stored as jsonb (keys reordered),
    exported, they are still function_call turns with the arguments as received."""
    from tests.contract.generated import jsonb_order

    value = '{"name": "calculate_tip", "arguments": {"total": 50, "percent": 15, "currency": "USD"}}'
    parallel = '[{"name": "a", "arguments": {"z": 1, "b": 2}}, {"name": "b", "arguments": "{\'q\': 1}"}]'
    payload = {"conversations": [
        {"from": "human", "value": "Tip on $50?"}, {"from": "function_call", "value": value},
        {"from": "observation", "value": "7.5"}, {"from": "function_call", "value": parallel},
        {"from": "observation", "value": "1"}, {"from": "observation", "value": "2"},
        {"from": "gpt", "value": "$7.50."}]}
    pt = check("sharegpt", payload)
    out = export("sharegpt", jsonb_order(json.loads(json.dumps(pt.messages))), pt.tools)
    assert out["conversations"] == payload["conversations"]
