"""SWE-agent `.traj` files: older and newer history shapes, trajectory-only files, demonstrations,
`tool_call_ids`, observations in user turns, export and round trips, errors."""

from __future__ import annotations

import pytest

from contract.formats import export, parse
from tests.trajectories._checks import check, error_of, pieces

SYSTEM = {"role": "system", "content": "SETTING: You are an autonomous programmer.", "agent": "primary"}
ISSUE = {"role": "user", "content": "We're currently solving the following issue: SyntaxError.", "agent": "primary",
         "message_type": "observation"}
STEP = ("The error is on line 4. Let's open the file.\n\n"
        "```\nopen tests/missing_colon.py\n```")


def older_history() -> list[dict]:
    return [
        SYSTEM,
        {"role": "user", "content": "Here is a demonstration:\n```\nls\n```", "agent": "primary", "is_demo": True},
        ISSUE,
        {"role": "assistant", "content": STEP, "thought": "The error is on line 4. Let's open the file.\n\n",
         "action": "open tests/missing_colon.py\n", "agent": "primary"},
        {"role": "user", "content": "[File: tests/missing_colon.py (10 lines total)]\n(Open file: n/a)\nbash-$",
         "agent": "primary"},
        {"role": "user", "content": "Your output was not formatted correctly. Please try again.", "agent": "primary"},
        {"role": "assistant", "content": "The fix is in.\n<command>\nsubmit\n</command>", "agent": "primary"},
    ]


def test_older_shape_text_commands_and_observations() -> None:
    pt = check("swe-agent", {"history": older_history(), "environment": "swe_main", "info": {"exit_status": "x"}})
    assert [m["role"] for m in pt.messages] == ["system", "user", "user", "assistant", "user", "user", "assistant"]
    assert pt.messages[1]["loss"] is False and pieces(pt, 1) == []  # the demonstration is context
    assert "observation" not in pt.messages[2] and pieces(pt, 2) == []  # the issue text is the task
    assert pieces(pt, 3) == [("reason", "The error is on line 4. Let's open the file.\n\n"),
                             ("action", "```\nopen tests/missing_colon.py\n```")]
    assert pt.messages[4]["observation"] is True and pieces(pt, 4)[0][0] == "observation"
    assert pieces(pt, 5) == [("observation", pt.messages[5]["text"])]  # format-error feedback
    assert pieces(pt, 6) == [("reason", "The fix is in.\n"), ("action", "<command>\nsubmit\n</command>")]


def newer_history() -> list[dict]:
    call = {"id": "call_1", "type": "function", "function": {"name": "find_file", "arguments": '{"file_name":"m.py"}'}}
    return [
        {**SYSTEM, "message_type": "system_prompt"},
        ISSUE,
        {"role": "assistant", "content": "First find the file.", "thought": "First find the file.",
         "action": "find_file m.py", "tool_calls": [call], "message_type": "action", "agent": "main"},
        {"role": "tool", "content": [{"type": "text", "text": "Found 1 matches\x00"}], "tool_call_ids": ["call_1"],
         "message_type": "observation", "agent": "main"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c2", "type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}},
            {"id": "c3", "type": "function", "function": {"name": "bash", "arguments": '{"command": "pwd"}'}}],
         "message_type": "action"},
        {"role": "tool", "content": "a.py\n/repo", "tool_call_ids": ["c2", "c3"], "message_type": "observation"},
    ]


def test_newer_shape_tool_calls_and_tool_call_ids() -> None:
    pt = check("swe-agent", {"history": newer_history()})
    assert pt.messages[2]["text"] == (
        'First find the file.\n<tool_call>\n{"name": "find_file", "arguments": {"file_name": "m.py"}}\n</tool_call>')
    assert pt.messages[2]["tool_calls"] == [{"id": "call_1", "name": "find_file", "arguments": {"file_name": "m.py"},
                                             "raw_arguments": '{"file_name":"m.py"}'}]
    assert pieces(pt, 2) == [("reason", "First find the file.\n"), ("action", pt.messages[2]["text"][21:])]
    assert pt.messages[3] == {"role": "tool", "text": "Found 1 matches\ufffd", "tool_call_id": "call_1"}
    assert pt.sanitized == 1
    assert pt.messages[5]["tool_call_ids"] == ["c2", "c3"]
    assert [k for k, _ in pieces(pt, 4)] == ["action", "action"]
    history = export("swe-agent", pt.messages, pt.tools)["history"]
    assert [h["message_type"] for h in history] == ["system_prompt", "observation", "action", "observation",
                                                    "action", "observation"]
    assert history[2]["content"] == "First find the file."
    assert history[2]["tool_calls"][0]["function"]["arguments"] == '{"file_name":"m.py"}'
    assert history[3]["tool_call_ids"] == ["call_1"] and history[5]["tool_call_ids"] == ["c2", "c3"]
    assert "observation_role" not in export("swe-agent", pt.messages, pt.tools)


def test_demonstrations_in_history_are_never_trained() -> None:
    demo = [{"role": "assistant", "content": "demo thought\n```\nls\n```", "is_demo": True},
            {"role": "user", "content": "a.py", "is_demo": True, "message_type": "demonstration"}]
    pt = check("swe-agent", {"history": [SYSTEM, *demo, ISSUE, {"role": "assistant", "content": STEP},
                                         {"role": "user", "content": "ok"}]})
    assert pt.messages[1]["loss"] is False and pt.messages[2]["loss"] is False
    assert pieces(pt, 1) == [] and pieces(pt, 2) == [] and "observation" not in pt.messages[3]
    assert pieces(pt, 5) == [("observation", "ok")]
    history = export("swe-agent", pt.messages, None)["history"]
    assert history[1]["is_demo"] is True and history[1]["message_type"] == "demonstration"


def test_trajectory_only_files() -> None:
    steps = [
        {"response": STEP, "thought": "t", "action": "open tests/missing_colon.py\n", "observation": "[File: …]",
         "state": {"open_file": "n/a"}, "execution_time": 0.2},
        {"response": "Now run it.", "thought": "Now run it.", "action": "python m.py", "observation": "8.2"},
    ]
    pt = check("swe-agent", {"trajectory": steps})
    assert [m["role"] for m in pt.messages] == ["assistant", "user", "assistant", "user"]
    assert pt.messages[0]["text"] == STEP  # the action is already in the response
    assert pt.messages[2]["text"] == "Now run it.\n\n```\npython m.py\n```"  # function-calling runs keep it apart
    assert pieces(pt, 2) == [("reason", "Now run it.\n\n"), ("action", "```\npython m.py\n```")]
    assert pieces(pt, 3) == [("observation", "8.2")]
    with_history = parse("swe-agent", {"trajectory": steps, "history": older_history()})
    assert len(with_history.messages) == len(older_history())  # history wins


@pytest.mark.parametrize("payload, field, code", [
    ({}, "history", "missing_field"),
    ({"history": []}, "history", "empty"),
    ({"history": [{"role": "human", "content": "x"}]}, "history[0].role", "unknown_role"),
    ({"history": [{"role": "tool", "content": "x", "tool_call_ids": ["nope"]}]},
     "history[0].tool_call_ids[0]", "unknown_tool_call_id"),
    ({"history": [{"role": "tool", "content": "x", "tool_call_id": "nope"}]}, "history[0].tool_call_id",
     "unknown_tool_call_id"),
    ({"history": [{"role": "tool", "content": "x", "tool_call_ids": "c1"}]}, "history[0].tool_call_ids",
     "invalid_type"),
    ({"history": [{"role": "assistant", "content": "x", "tool_calls": {"id": "c"}}]}, "history[0].tool_calls",
     "invalid_type"),
    ({"history": [{"role": "assistant", "content": "x",
                   "tool_calls": [{"id": "c", "type": "function", "function": {"name": "", "arguments": "{}"}}]}]},
     "history[0].tool_calls[0].function.name", "invalid_tool_call"),
    ({"history": [{"role": "assistant", "content": "a\x00b"}]}, "history[0].content", "invalid_character"),
    ({"trajectory": [{"thought": "t"}]}, "trajectory[0].response", "missing_field"),
    ({"history": [SYSTEM], "observation_role": "tool"}, "observation_role", "invalid_value"),
])
def test_errors(payload: dict, field: str, code: str) -> None:
    err = error_of("swe-agent", payload)
    assert (err["field"], err["code"]) == (field, code), err


@pytest.mark.parametrize("content", ["", "Let me look.", "```\nls\n```"])
def test_thinking_blocks_are_reasoning_and_kept(content: str) -> None:
    blocks = [{"type": "thinking", "thinking": "The file is probably in tests/.", "signature": "EqQBCkgIAhABGAIiQ…"},
              {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va…"}]
    call = {"id": "toolu_01", "type": "function", "function": {"name": "bash", "arguments": '{"command":"ls"}'}}
    for with_call in (False, True):
        item = {"role": "assistant", "content": content, "thinking_blocks": blocks,
                **({"tool_calls": [call]} if with_call else {})}
        history = [ISSUE, item, {"role": "tool" if with_call else "user", "content": "a.py",
                                 **({"tool_call_ids": ["toolu_01"]} if with_call else {})}]
        pt = check("swe-agent", {"history": history})
        think = "<think>\nThe file is probably in tests/.\n</think>\n"
        assert pt.messages[1]["text"].startswith(think + content) and pt.messages[1]["thinking_blocks"] == blocks
        assert pieces(pt, 1)[0] == ("reason", think)
        out = export("swe-agent", pt.messages, None)["history"][1]
        assert out["content"] == content and out["thinking_blocks"] == blocks
    assert error_of("swe-agent", {"history": [{"role": "assistant", "content": "x", "thinking_blocks": [
        {"type": "thinking", "thinking": 3}]}]})["field"] == "history[0].thinking_blocks[0].thinking"
