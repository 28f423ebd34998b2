"""The recorder: the openai-format trajectory it writes step by step, the outcome it derives, what it does
with the answer (stored, spooled, rejected), and the same through the async client; against the real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from distillery import AsyncDistillery, Distillery, Spool, Trajectory, current_trajectory
from tests.client.conftest import Server


def stored(server: Server, trajectory_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/v1/trajectories/{trajectory_id}", headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def spooled(spool: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(spool.glob("*.json"))]


def test_turns_are_built_in_the_chat_completions_shape() -> None:
    t = Trajectory(None, source="unit", task="Sum 2 and 3, then double.", system="Be brief.")
    t.thought("Add first.")
    t.thought("Then double.")
    first = t.tool_call("add", {"a": 2, "b": 3}, id="c1")
    t.observation(first, "5")
    t.say("Now the double.")
    t.thought("5 times 2")  # after text in the same turn: a new turn, so reasoning stays first
    second = t.tool_call("mul", '{"a": 5, "b": 2}')
    t.observation(second, "10", name="mul")
    t.thought("Done.")
    t.final("10")
    assert [m["role"] for m in t.messages] == ["system", "user", "assistant", "tool", "assistant", "assistant",
                                               "tool", "assistant"]
    assert t.messages[2] == {"role": "assistant", "content": "", "reasoning_content": "Add first.\nThen double.",
                             "tool_calls": [{"id": "c1", "type": "function",
                                             "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]}
    assert t.messages[4] == {"role": "assistant", "content": "Now the double."}
    assert t.messages[5]["reasoning_content"] == "5 times 2" and t.messages[5]["tool_calls"][0]["id"] == second
    assert t.messages[6] == {"role": "tool", "tool_call_id": second, "content": "10", "name": "mul"}
    assert t.messages[7] == {"role": "assistant", "content": "10", "reasoning_content": "Done."}
    assert t.answer == "10"
    with pytest.raises(ValueError, match="no tool call"):
        t.observation("nope", "x")
    with pytest.raises(ValueError, match="already has"):
        t.observation(first, "again")


def test_a_recorded_run_is_stored_and_leaves_the_spool(server: Server, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with Distillery(server.url, key=server.key, spool=spool) as api:
        with api.trajectory(task="Weather in Paris?", source="rec", teacher_model="teacher-x", tags=["dev"],
                            metadata={"run": 7}) as t:
            assert current_trajectory() is t
            t.thought("I should look it up.")
            call = t.tool_call("get_weather", {"city": "Paris"})
            (record,) = spooled(spool)  # on disk before anything reached the network
            assert record["state"] == "open" and record["body"]["messages"][-1]["tool_calls"][0]["id"] == call
            t.observation(call, '{"temp_c": 21}')
            t.final("It is 21°C.")
        assert current_trajectory() is None
    assert t.status == "stored" and t.receipt and t.receipt["created"], t.error
    assert spooled(spool) == [] and list(spool.glob("*.lock")) == []
    row = stored(server, t.receipt["id"])
    assert (row["source"], row["external_id"], row["outcome"]) == ("rec", t.external_id, "success")
    assert row["teacher_model"] == "teacher-x" and row["tags"] == ["dev"] and row["metadata"] == {"run": 7}
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert row["messages"][1]["text"].startswith("<think>\nI should look it up.\n</think>\n<tool_call>")
    calls = [{k: v for k, v in c.items() if k != "raw_arguments"} for c in row["messages"][1]["tool_calls"]]
    assert calls == [{"id": call, "name": "get_weather", "arguments": {"city": "Paris"}}]
    assert [s["kind"] for s in row["spans"]] == ["reason", "action", "observation", "action"]


def test_the_outcome_follows_the_block_unless_set(server: Server, tmp_path: Path) -> None:
    with Distillery(server.url, key=server.key, spool=tmp_path / "spool") as api:
        with pytest.raises(ZeroDivisionError), api.trajectory(task="1/0?", source="rec") as failed:
            t_call = failed.tool_call("divide", {"a": 1, "b": 0})
            failed.observation(t_call, "ZeroDivisionError: division by zero")
            raise ZeroDivisionError("division by zero")
        with api.trajectory(task="2+2?", source="rec", reward=0.5) as judged:
            judged.final("5")
            judged.set_outcome("failure", reward=0.0)
    failure = stored(server, failed.receipt["id"])  # type: ignore[index]
    assert failure["outcome"] == "failure" and failure["metadata"]["error"] == "ZeroDivisionError: division by zero"
    judged_row = stored(server, judged.receipt["id"])  # type: ignore[index]
    assert (judged_row["outcome"], judged_row["reward"]) == ("failure", 0.0)


def test_a_trajectory_the_server_refuses_is_set_aside_with_its_error(server: Server, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    spool = tmp_path / "spool"
    with Distillery(server.url, key=server.key, spool=spool) as api, \
            api.trajectory(task="x", source="rec", task_type="t" * 201) as t:  # over the 200-character limit
        t.final("y")
    assert t.status == "rejected" and t.error is not None and "422" in str(t.error)
    assert spooled(spool) == []
    (entry,) = Spool(spool).rejected()
    assert entry["body"]["external_id"] == t.external_id and entry["error"]["status"] == 422
    assert any("rejected" in r.getMessage() for r in caplog.records)


def test_background_delivery_goes_through_the_batch_queue(server: Server, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    with Distillery(server.url, key=server.key, spool=spool) as api:
        with api.trajectory(task="q", source="rec-bg", background=True) as t:
            t.final("a")
        assert t.status in ("queued", "stored")
        assert api.flush() == []
    assert t.status == "stored" and spooled(spool) == []
    assert stored(server, t.receipt["id"])["source"] == "rec-bg"  # type: ignore[index]


def test_without_a_spool_a_failed_delivery_is_reported_not_raised(down_server: Server, fast_retry: Any,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    with Distillery(down_server.url, key=down_server.key, spool=False, retry=fast_retry) as api, \
            api.trajectory(task="q", source="rec") as t:
        t.final("a")
    assert t.status == "unsent" and isinstance(t.error, httpx.ConnectError)
    assert any("no spool" in r.getMessage() for r in caplog.records)


def test_the_async_client_records_submits_and_flushes(server: Server, tmp_path: Path) -> None:
    async def main() -> tuple[Trajectory, list[dict[str, Any]]]:
        async with AsyncDistillery(server.url, key=server.key, spool=tmp_path / "spool") as api:
            async with api.trajectory(task="Weather?", source="rec-async") as t:
                call = t.tool_call("get_weather", {"city": "Oslo"})
                t.observation(call, "-3")
                t.final("-3°C")
            bodies = [Trajectory(None, source="rec-async", task=f"q{i}", external_id=f"a-{i}").body()
                      for i in range(3)]
            for body in bodies:
                body["messages"].append({"role": "assistant", "content": "ok"})
            futures = [await api.submit(body) for body in bodies]
            assert await api.flush() == []
            return t, [f.result() for f in futures]

    t, results = asyncio.run(main())
    assert t.status == "stored" and stored(server, t.receipt["id"])["outcome"] == "success"  # type: ignore[index]
    assert [r["status"] for r in results] == [201, 201, 201]
