"""Text-command steps (prose + one command block, answered by the environment) in OpenAI-shaped logs:
when the rule applies, the command block, observations in user turns and the `observation_role`
request option (contract.formats.segment)."""

from __future__ import annotations

import pytest

from contract.formats import export, parse
from tests.trajectories._checks import check, error_of, pieces

THOUGHT = "THOUGHT: I need to see the files first.\n\n"
COMMAND = "```bash\nls -la\n```"


def mini(*turns: str, option: bool = True) -> dict:
    """A mini-swe-agent log: system, task, then assistant/user turns alternating."""
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Please solve this issue: fix the bug."}]
    messages += [{"role": "assistant" if k % 2 == 0 else "user", "content": t} for k, t in enumerate(turns)]
    return {"messages": messages, **({"observation_role": "user"} if option else {})}


def test_observation_role_user_marks_environment_turns() -> None:
    pt = check("openai", mini(THOUGHT + COMMAND, "total 0", "Done, submitting.\n\n```bash\necho SUBMIT\n```",
                              "diff --git a/x b/x"))
    assert "observation" not in pt.messages[1] and pieces(pt, 1) == []  # the task stays context
    assert pieces(pt, 2) == [("reason", THOUGHT), ("action", COMMAND)]
    assert pt.messages[3] == {"role": "user", "text": "total 0", "observation": True}
    assert pieces(pt, 3) == [("observation", "total 0")]
    assert pieces(pt, 4)[-1] == ("action", "```bash\necho SUBMIT\n```")
    assert pieces(pt, 5) == [("observation", "diff --git a/x b/x")]
    assert export("openai", pt.messages, None)["observation_role"] == "user"


def test_without_the_option_a_user_reply_makes_a_final_answer() -> None:
    pt = check("openai", mini(THOUGHT + COMMAND, "total 0", option=False))
    assert pieces(pt, 2) == [("action", THOUGHT + COMMAND)]  # followed by a real user turn: a final answer
    assert pieces(pt, 3) == [] and "observation_role" not in export("openai", pt.messages, None)


def test_returncode_replies_are_observations_by_their_own_mark() -> None:
    reply = "<returncode>0</returncode>\n<output>\ntotal 0\n</output>"
    pt = check("openai", mini(THOUGHT + COMMAND, reply, option=False))
    assert pieces(pt, 2) == [("reason", THOUGHT), ("action", COMMAND)]
    assert pieces(pt, 3) == [("observation", reply)] and "observation" not in pt.messages[3]


@pytest.mark.parametrize("text, expected", [
    # code quoted in the prose stays reason; the last block is the command
    ("Earlier I ran\n```bash\ncat a\n```\nwhich failed. Now:\n```sh\nls\n```\n",
     [("reason", "Earlier I ran\n```bash\ncat a\n```\nwhich failed. Now:\n"), ("action", "```sh\nls\n```\n")]),
    ("Look:\n```\nls\n```\nThat lists the files.",
     [("reason", "Look:\n"), ("action", "```\nls\n```"), ("reason", "\nThat lists the files.")]),
    ("Inline `ls` and ```ls``` are not blocks.", [("reason", "Inline `ls` and ```ls``` are not blocks.")]),
    ("Truncated:\n```bash\nls -la", [("reason", "Truncated:\n"), ("action", "```bash\nls -la")]),
    ("Submit.\n<command>\nsubmit\n</command>", [("reason", "Submit.\n"), ("action", "<command>\nsubmit\n</command>")]),
    ("```bash\nls\n```", [("action", "```bash\nls\n```")]),
    ("<think>\nhmm\n</think>\n\nRun it:\n```bash\nls\n```",
     [("reason", "<think>\nhmm\n</think>\n\n"), ("reason", "Run it:\n"), ("action", "```bash\nls\n```")]),
])
def test_command_block_boundaries(text: str, expected: list) -> None:
    pt = check("openai", mini(text, "output"))
    assert pieces(pt, 2) == expected


def test_final_answers_with_code_stay_one_action() -> None:
    answer = "Here is the function:\n```python\ndef f():\n    return 1\n```"
    pt = check("openai", {"messages": [{"role": "user", "content": "Write f."},
                                       {"role": "assistant", "content": answer}]})
    assert pieces(pt, 1) == [("action", answer)]
    followed = check("openai", {"messages": [{"role": "user", "content": "Write f."},
                                             {"role": "assistant", "content": answer},
                                             {"role": "user", "content": "Thanks! Now g."}]})
    assert pieces(followed, 1) == [("action", answer)]


def test_a_step_answered_by_a_tool_message_is_a_command_step() -> None:
    pt = check("openai", {"messages": [{"role": "user", "content": "t"},
                                       {"role": "assistant", "content": THOUGHT + COMMAND},
                                       {"role": "tool", "content": "total 0"}]})
    assert pieces(pt, 1) == [("reason", THOUGHT), ("action", COMMAND)]


def test_prose_before_structured_calls_is_never_a_command() -> None:
    text = "Checking:\n```bash\nls\n```"
    call = {"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"cmd": "ls"}'}}
    pt = check("openai", {"messages": [{"role": "user", "content": "t"},
                                       {"role": "assistant", "content": text, "tool_calls": [call]},
                                       {"role": "tool", "tool_call_id": "c1", "content": "a"}]})
    assert pieces(pt, 1)[0] == ("reason", text + "\n")


def test_the_option_reaches_every_format_and_is_checked() -> None:
    smol = parse("smolagents", {"observation_role": "user", "messages": [
        {"role": "user", "content": "task"}, {"role": "assistant", "content": "Thought: x\n<code>\nls()\n</code>"},
        {"role": "user", "content": "Now do y."}]})
    assert smol.messages[2]["observation"] is True
    assert error_of("openai", {**mini("x"), "observation_role": "assistant"})["code"] == "invalid_value"
