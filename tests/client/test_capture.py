"""Capture of the real OpenAI and Anthropic SDK clients, pointed at a local fake of those APIs' wire format
(``fake_llm``), recording into trajectories stored on the real Distillery server: tool calls stay
structured, reasoning / thinking is kept, streamed replies are folded back, prefills are joined."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from distillery import AsyncDistillery, Distillery, capture_anthropic, capture_openai, first_thought_prefix
from tests.client import fake_llm
from tests.client.conftest import Server

openai_sdk = pytest.importorskip("openai")
anthropic_sdk = pytest.importorskip("anthropic")

OPENAI_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Current weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
TASK = "What is the weather in Paris?"


@pytest.fixture
def fake() -> Iterator[fake_llm.FakeLLM]:
    llm = fake_llm.FakeLLM()
    yield llm
    llm.close()


@pytest.fixture
def api(server: Server, tmp_path: Path) -> Iterator[Distillery]:
    with Distillery(server.url, key=server.key, spool=tmp_path / "spool") as client:
        yield client


def stored(server: Server, trajectory_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/v1/trajectories/{trajectory_id}", headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def assert_weather_run(row: dict[str, Any], call_id: str, model: str, *, said: str = "") -> None:
    """The stored canonical form of the scripted run: the question, a turn that reasons and calls the tool,
    the tool's answer, and the final answer."""
    messages = row["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[1]["text"] == TASK
    assert messages[2]["text"].startswith(f"<think>\n{fake_llm.THINKING}\n</think>\n{said}")
    calls = [{k: v for k, v in c.items() if k != "raw_arguments"} for c in messages[2]["tool_calls"]]
    assert calls == [{"id": call_id, "name": "get_weather", "arguments": fake_llm.ARGS}]
    assert messages[3]["text"] == '{"temp_c": 21}'
    assert messages[4]["text"] == fake_llm.FINAL
    assert row["teacher_model"] == model and row["outcome"] == "success"
    assert row["tools"][0]["function"]["name"] == "get_weather"
    assert {s["kind"] for s in row["spans"]} == {"reason", "action", "observation"}


def run_openai(client: Any, stream: bool) -> None:
    messages: list[Any] = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": TASK}]
    for _ in range(2):
        kwargs = {"model": "gpt-fake", "messages": messages, "tools": OPENAI_TOOLS}
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **kwargs))
            calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
            if not calls:
                return
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": calls[0][0].id, "type": "function",
                 "function": {"name": "get_weather", "arguments": json.dumps(fake_llm.ARGS)}}]})
            messages.append({"role": "tool", "tool_call_id": calls[0][0].id, "content": '{"temp_c": 21}'})
            continue
        reply = client.chat.completions.create(**kwargs).choices[0].message
        if not reply.tool_calls:
            return
        messages.append(reply)  # the SDK's own object, as the OpenAI cookbook does
        for call in reply.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_completions_are_recorded(api: Distillery, server: Server, fake: fake_llm.FakeLLM,
                                             stream: bool) -> None:
    client = capture_openai(openai_sdk.OpenAI(api_key="sk-test", base_url=f"{fake.url}/v1", max_retries=0), api)
    with api.trajectory(task=TASK, source="capture-openai") as t:
        run_openai(client, stream)
    assert t.status == "stored", t.error
    assert len(fake.requests) == 2 and fake.requests[0][0] == "/v1/chat/completions"
    assert_weather_run(stored(server, t.receipt["id"]), fake_llm.CALL_ID["openai"], "gpt-fake")  # type: ignore[index]


def test_async_openai_sdk_with_the_async_client(server: Server, fake: fake_llm.FakeLLM, tmp_path: Path) -> None:
    async def main() -> Any:
        async with AsyncDistillery(server.url, key=server.key, spool=tmp_path / "spool") as api:
            client = capture_openai(openai_sdk.AsyncOpenAI(api_key="sk-test", base_url=f"{fake.url}/v1",
                                                           max_retries=0), api)
            async with api.trajectory(task=TASK, source="capture-async") as t:
                messages: list[Any] = [{"role": "system", "content": "You are terse."},
                                       {"role": "user", "content": TASK}]
                reply = (await client.chat.completions.create(model="gpt-fake", messages=messages,
                                                              tools=OPENAI_TOOLS)).choices[0].message
                messages += [reply, {"role": "tool", "tool_call_id": reply.tool_calls[0].id,
                                     "content": '{"temp_c": 21}'}]
                stream = await client.chat.completions.create(model="gpt-fake", messages=messages,
                                                              tools=OPENAI_TOOLS, stream=True)
                assert "".join([c.choices[0].delta.content or "" async for c in stream]) == fake_llm.FINAL
            return t

    t = asyncio.run(main())
    assert t.status == "stored", t.error
    assert_weather_run(stored(server, t.receipt["id"]), fake_llm.CALL_ID["openai"], "gpt-fake")


def run_anthropic(client: Any, stream: bool) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": TASK}]
    for _ in range(2):
        kwargs = {"model": "claude-fake", "max_tokens": 1024, "system": "You are terse.", "messages": messages,
                  "tools": ANTHROPIC_TOOLS, "thinking": {"type": "enabled", "budget_tokens": 512}}
        if stream:
            with client.messages.create(stream=True, **kwargs) as events:
                starts = [e.content_block for e in events if e.type == "content_block_start"]
            uses = [b for b in starts if b.type == "tool_use"]
            content = [{"type": "tool_use", "id": u.id, "name": u.name, "input": fake_llm.ARGS} for u in uses]
        else:
            reply = client.messages.create(**kwargs)
            content, uses = reply.content, [b for b in reply.content if b.type == "tool_use"]
        if not uses:
            return
        messages.append({"role": "assistant", "content": content})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": u.id, "content": '{"temp_c": 21}'} for u in uses]})


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_messages_are_recorded_with_thinking(api: Distillery, server: Server, fake: fake_llm.FakeLLM,
                                                           stream: bool) -> None:
    client = capture_anthropic(anthropic_sdk.Anthropic(api_key="sk-ant-test", base_url=fake.url, max_retries=0), api)
    with api.trajectory(task=TASK, source="capture-anthropic") as t:
        run_anthropic(client, stream)
    assert t.status == "stored", t.error
    assert [p for p, _ in fake.requests] == ["/v1/messages", "/v1/messages"]
    assert_weather_run(stored(server, t.receipt["id"]), fake_llm.CALL_ID["anthropic"], "claude-fake",  # type: ignore[index]
                       said="Let me check.")


def test_first_thought_prefix_is_kept_and_marked(api: Distillery, server: Server, fake: fake_llm.FakeLLM) -> None:
    """The teacher is prefilled with the start of its first thought; the trajectory holds prefix + continuation
    as one assistant turn, and says which text was prefilled."""
    prefix = "The question needs live data, "
    messages = first_thought_prefix([{"role": "user", "content": TASK}], prefix)
    assert messages[-1] == {"role": "assistant", "content": prefix.rstrip()}
    client = capture_anthropic(anthropic_sdk.Anthropic(api_key="sk-ant-test", base_url=fake.url, max_retries=0), api)
    with api.trajectory(task=TASK, source="capture-prefix") as t:
        reply = client.messages.create(model="claude-fake", max_tokens=256, messages=messages)
        assert reply.content[0].text == fake_llm.CONTINUATION  # the API answers the continuation only
    row = stored(server, t.receipt["id"])  # type: ignore[index]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["text"] == prefix.rstrip() + fake_llm.CONTINUATION
    assert row["metadata"]["prefilled"] == [{"message": 1, "field": "content", "text": prefix.rstrip()}]
    assert "first-thought-prefix" in row["tags"]
    with pytest.raises(ValueError, match="already end"):
        first_thought_prefix(messages, "again")


def test_calls_outside_a_trajectory_pass_through(api: Distillery, fake: fake_llm.FakeLLM, tmp_path: Path) -> None:
    client = capture_openai(openai_sdk.OpenAI(api_key="sk-test", base_url=f"{fake.url}/v1", max_retries=0), api)
    reply = client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": TASK}])
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert client.api_key == "sk-test"  # everything else is the SDK client's own
    assert api.spool is not None and len(api.spool) == 0


def test_a_recorder_given_explicitly_needs_no_with_block(api: Distillery, fake: fake_llm.FakeLLM) -> None:
    recorder = api.trajectory(task=TASK, source="capture-explicit")
    client = capture_openai(openai_sdk.OpenAI(api_key="sk-test", base_url=f"{fake.url}/v1", max_retries=0), recorder)
    client.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": TASK}])
    assert [m["role"] for m in recorder.messages] == ["user", "assistant"]
    assert recorder.messages[1]["reasoning_content"] == fake_llm.THINKING
    assert recorder.body()["teacher_model"] == "gpt-fake"
