"""Sanitize, don't refuse, what is never trained (issue #10, part 4): NUL and lone surrogates in tool
output and observations become U+FFFD and are counted (`ParsedTrajectory.sanitized`, the receipt's
`sanitized`); the same characters in trained or context text (assistant, user, system, task) are
still refused with the field path."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from contract.formats import canonical_sha256, export, parse
from contract.formats.base import observation_content, observation_text, sanitize
from tests.app.payloads import OPENAI, REACT
from tests.trajectories._checks import error_of

BAD = "cat: \x00\x00ELF\ud800 binary"
CLEAN = "cat: \ufffd\ufffdELF\ufffd binary"


def test_sanitize_keeps_length_and_counts() -> None:
    assert sanitize(BAD) == (CLEAN, 3)
    assert len(CLEAN) == len(BAD)  # offsets of spans are unchanged by the replacement
    assert sanitize("fine \ufffd") == ("fine \ufffd", 0)  # a real U+FFFD is not counted
    assert observation_text("a\x00", "f") == ("a\ufffd", 1)
    assert observation_content([{"type": "text", "text": "a\x00"}, {"type": "text", "text": "\udfff"}],
                               "f") == ("a\ufffd\n\ufffd", 2)
    assert observation_content(None, "f") == ("", 0)


def _openai(tool_text: str, **over: str) -> dict:
    payload = {"messages": [
        {"role": "user", "content": over.get("user", "read the file")},
        {"role": "assistant", "content": over.get("assistant", "Reading it."),
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "cat", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": tool_text},
        {"role": "user", "content": over.get("observation", "Observation: ok")},
        {"role": "assistant", "content": "Done."},
    ]}
    return payload


def test_openai_tool_and_observation_text_is_sanitized() -> None:
    pt = parse("openai", _openai(BAD, observation="Observation: \x00"))
    assert pt.messages[2]["text"] == CLEAN and pt.messages[3]["text"] == "Observation: \ufffd"
    assert pt.sanitized == 4
    back = parse("openai", export("openai", pt.messages, pt.tools))  # the export re-ingests clean
    assert back.sanitized == 0 and canonical_sha256(back.messages) == canonical_sha256(pt.messages)
    parts = _openai("x")
    parts["messages"][2]["content"] = [{"type": "text", "text": "\x00"}]
    assert parse("openai", parts).sanitized == 1


@pytest.mark.parametrize("where, field", [
    ("assistant", "messages[1].content"),
    ("user", "messages[0].content"),
    ("observation", "messages[3].content"),  # a user turn that is not an observation stays strict
])
def test_openai_trained_and_user_text_stays_strict(where: str, field: str) -> None:
    value = "no \x00 here" if where != "observation" else "plain \x00 user text"
    err = error_of("openai", _openai("fine", **{where: value}))
    assert (err["field"], err["code"]) == (field, "invalid_character"), err


def test_user_turns_marked_by_observation_role_are_sanitized() -> None:
    payload = {"messages": [{"role": "user", "content": "fix the bug"},
                            {"role": "assistant", "content": "```bash\ncat a.out\n```"},
                            {"role": "user", "content": BAD},
                            {"role": "assistant", "content": "Binary."}]}
    assert error_of("openai", payload)["field"] == "messages[2].content"  # without the option: strict
    pt = parse("openai", {**payload, "observation_role": "user"})
    assert pt.messages[2]["text"] == CLEAN and pt.sanitized == 3
    first = copy.deepcopy(payload)
    first["messages"][0]["content"] = "fix \x00"  # before the first assistant turn: the task, strict
    assert error_of("openai", {**first, "observation_role": "user"})["field"] == "messages[0].content"
    turns = [{"from": "human", "value": "go"}, {"from": "gpt", "value": "ls"}, {"from": "human", "value": BAD}]
    assert parse("sharegpt", {"conversations": turns, "observation_role": "user"}).sanitized == 3
    assert error_of("sharegpt", {"conversations": turns})["field"] == "conversations[2].value"


def test_sharegpt_observation_is_sanitized_gpt_is_strict() -> None:
    payload = {"conversations": [
        {"from": "human", "value": "read it"},
        {"from": "function_call", "value": '{"name": "cat", "arguments": {}}'},
        {"from": "observation", "value": BAD},
        {"from": "gpt", "value": "binary"},
    ]}
    pt = parse("sharegpt", payload)
    assert pt.messages[2]["text"] == CLEAN and pt.sanitized == 3
    strict = copy.deepcopy(payload)
    strict["conversations"][3]["value"] = "bin\x00ary"
    assert error_of("sharegpt", strict)["field"] == "conversations[3].value"
    strict["conversations"][3]["value"] = "fine"
    strict["conversations"][0]["value"] = "re\udfffad"
    assert error_of("sharegpt", strict)["field"] == "conversations[0].value"


def test_react_sanitizes_only_inside_observations() -> None:
    text = "Thought: look\nAction: cat[x]\nObservation: " + BAD + "\nThought: done\nFinal Answer: binary"
    pt = parse("react", {"task": "t", "text": text})
    assert [m["role"] for m in pt.messages] == ["user", "assistant", "tool", "assistant"]
    assert pt.messages[2]["text"] == CLEAN and pt.sanitized == 3
    for bad in ("Thought: lo\x00ok\nObservation: x", "Question: wh\x00y\nThought: a\nObservation: b",
                "Thought: a\nObservation: b\nThought: c\ud800\nFinal Answer: d"):
        err = error_of("react", {"text": bad, **({} if bad.startswith("Question") else {"task": "t"})})
        assert (err["field"], err["code"]) == ("text", "invalid_character")
        assert f"offset {next(k for k, c in enumerate(bad) if c in chr(0) + chr(0xD800))}" in err["message"]


def test_receipts_count_sanitized_single_and_batch(client) -> None:
    body = copy.deepcopy(OPENAI)
    body["external_id"] = "nul-1"
    body["messages"][3]["content"] = BAD.replace("\ud800", "SURROGATE")
    raw = orjson.dumps(body).replace(b"SURROGATE", b"\\ud800")  # orjson writes NUL as \u0000
    r = client.post("/v1/trajectories", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text[:400]
    assert r.json()["sanitized"] == 3
    tid = r.json()["id"]
    stored = client.get(f"/v1/trajectories/{tid}").json()["messages"][3]["text"]
    assert stored == CLEAN
    assert client.post("/v1/trajectories", content=raw,
                       headers={"content-type": "application/json"}).json()["sanitized"] == 3  # replay
    original = client.get(f"/v1/trajectories/{tid}/export", params={"original": "true"})
    assert original.content == raw  # the payload as received is kept, NUL escapes included

    clean, react = copy.deepcopy(OPENAI), copy.deepcopy(REACT)
    clean["external_id"] = "clean-1"
    react["text"] = react["text"].replace("first published in 1844", "first \x00 published in 1844")
    strict = copy.deepcopy(clean)
    strict["external_id"], strict["messages"][4]["content"] = "strict-1", "It is \x00 21°C."
    r = client.post("/v1/trajectories/batch", json={"items": [clean, react, strict]})
    items = r.json()["items"]
    assert [i["status"] for i in items] == [201, 201, 422]
    assert [i.get("sanitized") for i in items] == [0, 1, None]
    assert items[2]["error"]["errors"][0]["field"] == "messages[4].content"
    assert client.post("/v1/trajectories", json=clean).json()["sanitized"] == 0


@pytest.mark.parametrize(("fmt", "log", "field"), [
    ("swe-agent", "tests/data/logs/swe-agent/fc-test-repo.json", "history"),
    ("openai-responses", None, "input"),
])
def test_formats_read_from_other_fields_sanitize_through_the_api(client, fmt, log, field) -> None:  # type: ignore[no-untyped-def]
    """NUL in the tool output of formats whose messages are not under `messages` (a real SWE-agent log; a
    Responses `function_call_output`) is sanitized by the API too, not refused before the parser sees it."""
    if log is not None:
        body = orjson.loads(Path(log).read_bytes())["request"]
        tool = next(m for m in body[field] if m.get("role") == "tool")
        tool["content"] += "\x00\x00ELF"
    else:
        body = {"format": fmt, field: [
            {"type": "message", "role": "user", "content": "cat the file"},
            {"type": "function_call", "call_id": "c1", "name": "cat", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "\x00ELF"},
        ]}
    body = {**body, "source": f"sanitize-{fmt}", "external_id": f"nul-{fmt}"}
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["sanitized"] >= 1
