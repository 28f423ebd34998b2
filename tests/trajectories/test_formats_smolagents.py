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
    block = '<tool_call>\n{"name": "g", "arguments": null}\n</tool_call>'
    assert pt.messages[4] == {"role": "assistant", "text": block,
                              "tool_calls": [{"id": "c2", "name": "g", "arguments": None}], "calls_at": 0}
    assert pieces(pt, 4) == [("action", pt.messages[4]["text"])]  # the call is the step's action
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


TOOL_CALL_LINE = "Tool call call_5r6D: calling 'python_interpreter' with arguments: {'code': 'print(1)'}"


@pytest.mark.parametrize("text, expected", [
    (TOOL_CALL_LINE, [("action", TOOL_CALL_LINE)]),  # smolagents 1.18–1.20
    (TOOL_CALL_LINE + "\nTool call call_2: calling 'web_search' with arguments: {'query': 'x'}",
     [("action", TOOL_CALL_LINE + "\nTool call call_2: calling 'web_search' with arguments: {'query': 'x'}")]),
    ("I will compute it.Tool call c1: calling 'f' with arguments: {}",  # the model's text, then smolagents' line
     [("reason", "I will compute it."), ("action", "Tool call c1: calling 'f' with arguments: {}")]),
    ("Called Tool: 'final_answer' with arguments: {'answer': '7.2904'}",  # smolagents 1.14–1.17
     [("action", "Called Tool: 'final_answer' with arguments: {'answer': '7.2904'}")]),
])
def test_tool_calling_agent_steps_are_actions(text: str, expected: list) -> None:
    call = ("Calling tools:\n[{'id': 'c1', 'type': 'function', 'function': "
            "{'name': 'f', 'arguments': {'code': 'print(1)'}}}]")
    pt = check("smolagents", {"messages": [part("user", "New task:\nx"), part("assistant", text),
                                           part("tool-call", call), part("tool-response", "Observation:\n1")]})
    assert pieces(pt, 1) == expected
    assert pt.messages[1]["tool_calls"][0]["arguments"] == {"code": "print(1)"}


@pytest.mark.parametrize("text, expected", [
    ("Guava</code>", [("action", "Guava</code>")]),  # a bare answer the model closed as code
    ("Final Answer: 1537</code>", [("action", "Final Answer: 1537</code>")]),
    ("To solve this, I will search first.\n\nLet's begin.</code>",
     [("reason", "To solve this, I will search first.\n\nLet's begin.</code>")]),
    ("Thought: I know it.\nFinal Answer: 42", [("reason", "Thought: I know it.\n"), ("action", "Final Answer: 42")]),
    ("Let me compute.\n\n```python\nx = 1\nprint(x)\n```\n\nThis prints x.</code>",
     [("reason", "Let me compute.\n\n"), ("action", "```python\nx = 1\nprint(x)\n```"),
      ("reason", "\n\nThis prints x.</code>")]),
    ("Finalize.\n\n```python\nfinal_answer(57)\n```</code>",
     [("reason", "Finalize.\n\n"), ("action", "```python\nfinal_answer(57)\n```</code>")]),
])
def test_code_agent_steps_without_proper_code(text: str, expected: list) -> None:
    pt = check("smolagents", {"messages": [part("user", "task"), part("assistant", text)]})
    assert pieces(pt, 1) == expected


def test_tool_response_text_is_sanitized_not_refused() -> None:
    step = part("assistant", "Thought: cat\n<code>\ncat()\n</code>")
    pt = check("smolagents", {"messages": [part("user", "task"), step,
                                           part("tool-response", "Observation:\nbinary\x00data")]})
    assert pt.messages[2]["text"] == "Observation:\nbinary\ufffddata" and pt.sanitized == 1
    assert error_of("smolagents", {"messages": [part("assistant", "a\x00")]})["code"] == "invalid_character"


WEATHER = ("Calling tools:\n[{'id': 'tooluse_7Gi9', 'type': 'function', 'function': "
           "{'name': 'get_weather', 'arguments': {'days': 1, 'city': 'Rome'}}}]")


@pytest.mark.parametrize("text", ["", "Let me check the forecast first."])
def test_tool_calling_agent_calls_outside_the_text_are_rendered(text: str) -> None:
    """smolagents <= 1.13 and >= 1.21 keep a ToolCallingAgent step's text to the model's own (often
    empty) content; the call is only in the tool-call message, so it is rendered as the action."""
    pt = check("smolagents", {"messages": [
        part("user", "New task:\nCheck the weather in Rome."), part("assistant", text), part("tool-call", WEATHER),
        part("tool-response", "Observation:\n{'city': 'Rome', 'forecast': 'sunny'}")]})
    block = '<tool_call>\n{"name": "get_weather", "arguments": {"days": 1, "city": "Rome"}}\n</tool_call>'
    assert pt.messages[1]["text"] == (text + "\n" if text else "") + block
    assert pieces(pt, 1) == ([("reason", text + "\n")] if text else []) + [("action", block)]
    exported = export("smolagents", pt.messages, None)["messages"]
    assert exported[1]["content"][0]["text"] == text  # the rendered block is not written back into the text
    assert exported[2]["content"][0]["text"] == WEATHER  # arguments in the order received
