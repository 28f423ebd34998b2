"""smolagents CodeAct logs: code actions, tool-call folding, observations, round trips, errors."""

from __future__ import annotations

import pytest

from contract.formats import export
from tests.trajectories._checks import check, error_of, pieces


def part(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


CALL_1 = ("Calling tools:\n[{'id': 'call_1', 'type': 'function', 'function': "
          "{'name': 'python_interpreter', 'arguments': 'print(wiki(query=\"Paris population\"))'}}]")
STEP_1 = 'Thought: I need the population.\nCode:\n```py\nprint(wiki(query="Paris population"))\n```<end_code>'


def test_agent_distillation_sample() -> None:
    payload = {"messages": [
        part("system", "You are an expert assistant who can solve any task using code blobs."),
        part("user", "New task:\nHow many people live in Paris?"),
        part("assistant", STEP_1),
        part("tool-call", CALL_1),
        part("tool-response", "Call id: call_1\nObservation:\nExecution logs:\n2.1 million"),
        part("assistant", 'Thought: Done.\nCode:\n```py\nfinal_answer("2.1 million")\n```<end_code>'),
        part("tool-call", "Calling tools:\n[{'id': 'call_2', 'type': 'function', 'function': "
                          "{'name': 'python_interpreter', 'arguments': 'final_answer(\"2.1 million\")'}}]"),
        part("tool-response",
             "Call id: call_2\nObservation:\nExecution logs:\nLast output from code snippet:\n2.1 million"),
    ]}
    pt = check("smolagents", payload)
    assert [m["role"] for m in pt.messages] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert pt.messages[2] == {"role": "assistant", "text": STEP_1, "tool_calls": [
        {"id": "call_1", "name": "python_interpreter", "arguments": 'print(wiki(query="Paris population"))'}]}
    assert pieces(pt, 2) == [("reason", "Thought: I need the population.\n"),
                             ("action", 'Code:\n```py\nprint(wiki(query="Paris population"))\n```<end_code>')]
    assert pieces(pt, 4)[-1] == ("action", 'Code:\n```py\nfinal_answer("2.1 million")\n```<end_code>')
    assert pieces(pt, 3) == [("observation", pt.messages[3]["text"])]
    assert pieces(pt, 1) == []


def test_error_response_python_fence_code_in_thought_and_string_content() -> None:
    thought = "Thought: Last time ```py\nx = 1\n``` failed; retry 🙂.\n"
    code = "Code:\n```python\nresult = 1 / 0\nprint(result)\n```<end_code>"
    payload = {"messages": [
        {"role": "user", "content": "New task:\nDivide."},
        {"role": "assistant", "content": thought + code + "\n"},
        {"role": "tool-response", "content": "Call id: call_1\nError:\nCode execution failed at line "
                                             "'result = 1 / 0' due to: ZeroDivisionError: division by zero\n"
                                             "Now let's retry: take care not to repeat previous errors!"},
    ]}
    pt = check("smolagents", payload)
    assert pieces(pt, 1) == [("reason", thought), ("action", code + "\n")]
    assert pieces(pt, 2)[0][0] == "observation"


@pytest.mark.parametrize("text, expected", [
    ("Thought: t\n<code>\nfinal_answer(3)\n</code>",
     [("reason", "Thought: t\n"), ("action", "<code>\nfinal_answer(3)\n</code>")]),
    ("Thought: t\n```py\nx()\n```\n", [("reason", "Thought: t\n"), ("action", "```py\nx()\n```\n")]),
    ("Code:\n```py\nx()\n```<end_code>\nObservation: made up", [("action", "Code:\n```py\nx()\n```<end_code>"),
                                                                ("reason", "\nObservation: made up")]),
    ("Thought: no code this time.", [("reason", "Thought: no code this time.")]),
    ("Thought: a sketch:\n```py\nx = 1\n```\nnow run it:\n```python\nprint(1)\n```<end_code>",
     [("reason", "Thought: a sketch:\n```py\nx = 1\n```\nnow run it:\n"),
      ("action", "```python\nprint(1)\n```<end_code>")]),
    ("Thought: unclosed\nCode:\n```py\nx(", [("reason", "Thought: unclosed\n"), ("action", "Code:\n```py\nx(")]),
])
def test_code_action_boundaries(text: str, expected: list) -> None:
    pt = check("smolagents", {"messages": [part("user", "task"), part("assistant", text)]})
    assert pieces(pt, 1) == expected


TUPLE_ARGS = "Calling tools:\n[{'id': 'c0', 'type': 'function', 'function': {'name': 'f', 'arguments': {'x': (1, 2)}}}]"
NONE_ARGS = "Calling tools:\n[{'id': 'c2', 'type': 'function', 'function': {'name': 'g', 'arguments': None}}]"


def test_task_field_raw_tool_calls_and_orphan_tool_call() -> None:
    payload = {"task": "Add 2 and 2.", "messages": [
        part("system", "sys"),
        part("tool-call", TUPLE_ARGS),
        part("assistant", "Thought: add.\nCode:\n```py\nprint(2+2)\n```<end_code>"),
        part("tool-call", "Calling tools: something else"),
        part("tool-call", NONE_ARGS),
        {"role": "tool-response", "content": None},
    ]}
    pt = check("smolagents", payload)
    assert [(m["role"], m["text"]) for m in pt.messages[:2]] == [("system", "sys"), ("user", "Add 2 and 2.")]
    assert pt.messages[2] == {"role": "assistant", "text": "", "raw_tool_calls": TUPLE_ARGS}  # a tuple is not JSON
    assert pt.messages[3]["raw_tool_calls"] == "Calling tools: something else"
    assert pt.messages[4] == {"role": "assistant", "text": "",
                              "tool_calls": [{"id": "c2", "name": "g", "arguments": None}]}
    assert pt.messages[5] == {"role": "tool", "text": ""}
    user_given = check("smolagents", {"task": "ignored",
                                      "messages": [part("user", "New task:\nX"), part("assistant", "a")]})
    assert [m["text"] for m in user_given.messages] == ["New task:\nX", "a"]


def test_export_writes_tool_call_messages_back() -> None:
    payload = {"messages": [part("user", "u"), part("assistant", STEP_1), part("tool-call", CALL_1),
                            part("tool-response", "Observation:\n2.1 million")]}
    pt = check("smolagents", payload)
    out = export("smolagents", pt.messages, None)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "tool-call", "tool-response"]
    assert out["messages"][2]["content"][0]["text"].startswith("Calling tools:\n[{'id': 'call_1'")


@pytest.mark.parametrize("payload, field, code", [
    ({}, "messages", "missing_field"),
    ({"messages": [part("tool", "x")]}, "messages[0].role", "unknown_role"),
    ({"messages": [{"role": "assistant", "content": [{"type": "image", "image": "..."}]}]},
     "messages[0].content[0].type", "unsupported_content"),
    ({"messages": [{"role": "assistant", "content": {"text": "x"}}]}, "messages[0].content", "invalid_type"),
    ({"messages": [part("user", "x")], "task": 1}, "task", "invalid_type"),
])
def test_errors(payload: dict, field: str, code: str) -> None:
    err = error_of("smolagents", payload)
    assert (err["field"], err["code"]) == (field, code), err
