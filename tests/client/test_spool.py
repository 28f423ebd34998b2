"""Nothing recorded is lost: while the server is down trajectories wait in the spool and are replayed once it
is back, exactly once (source + external_id); a process SIGKILLed between steps leaves records that the
next client replays: finished ones as recorded, the unfinished one as outcome "unknown", tagged
``unfinished``, with the steps it had."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx

from distillery import Distillery, Spool
from tests.client.conftest import Server

ROOT = Path(__file__).resolve().parents[2]


def listed(server: Server, source: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/v1/trajectories", params={"source": source, "limit": 1000},
                  headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def read(server: Server, trajectory_id: str) -> dict[str, Any]:
    return httpx.get(f"{server.url}/v1/trajectories/{trajectory_id}",
                     headers={"Authorization": f"Bearer {server.key}"}).json()  # type: ignore[no-any-return]


def test_posted_while_down_then_replayed_exactly_once(down_server: Server, tmp_path: Path, fast_retry: Any) -> None:
    spool = tmp_path / "spool"
    with Distillery(down_server.url, key=down_server.key, spool=spool, retry=fast_retry) as api:
        runs = []
        for i in range(3):
            with api.trajectory(task=f"question {i}", source="spooled", external_id=f"s-{i}") as t:
                t.thought("thinking")
                t.final(f"answer {i}")
            runs.append(t)
        assert [t.status for t in runs] == ["spooled"] * 3 and all(isinstance(t.error, httpx.ConnectError)
                                                                   for t in runs)
        report = api.replay_spool()  # still down: everything stays
        assert (report.stored, report.kept) == ([], 3)
    records = sorted((json.loads(p.read_text()) for p in spool.glob("*.json")), key=lambda r: r["body"]["task"])
    assert [r["state"] for r in records] == ["done"] * 3
    assert [r["body"]["outcome"] for r in records] == ["success"] * 3
    lost_ack = tmp_path / "copy.json"  # as if the process had died between the server's answer and the unlink
    shutil.copy(next(spool.glob("*.json")), lost_ack)

    down_server.start()
    with Distillery(down_server.url, key=down_server.key, spool=spool) as api:  # replays on start
        api.flush()
        assert Spool(spool).keys() == []
        shutil.copy(lost_ack, spool / lost_ack.name.replace("copy", "a" * 32))
        again = api.replay_spool()
    assert len(again.stored) == 1 and again.kept == 0 and Spool(spool).keys() == []
    rows = listed(down_server, "spooled")
    assert sorted(r["external_id"] for r in rows) == ["s-0", "s-1", "s-2"]  # once each
    assert again.stored[0] in {r["id"] for r in rows}
    assert {r["outcome"] for r in rows} == {"success"}


RECORDER = textwrap.dedent("""
    import sys, time
    from distillery import Distillery, Retry

    url, spool = sys.argv[1], sys.argv[2]
    api = Distillery(url, key="unused", spool=spool, replay=False, retry=Retry(attempts=1))
    with api.trajectory(task="finished run", source="killed", external_id="k-done") as t:
        t.final("done")                      # the server is down: it stays spooled
    print(t.status, flush=True)
    t = api.trajectory(task="interrupted run", source="killed", external_id="k-open", teacher_model="m")
    t.__enter__()
    t.thought("Step one.")
    call = t.tool_call("search", {"q": "distillation"})
    t.observation(call, "3 results")
    print("steps written", flush=True)
    time.sleep(600)                          # killed here, between steps
    t.thought("never written")
""")


def test_a_killed_process_loses_nothing(down_server: Server, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    script = tmp_path / "agent.py"
    script.write_text(RECORDER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "client")}
    agent = subprocess.Popen([sys.executable, str(script), down_server.url, str(spool)], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline().strip() == "spooled"
        assert agent.stdout.readline().strip() == "steps written"
        down_server.start()
        with Distillery(down_server.url, key=down_server.key, spool=spool, replay=False) as api:
            live = api.replay_spool()  # the agent still runs: its open record is left alone
        assert len(live.stored) == 1 and live.kept == 0 and len(Spool(spool).keys()) == 1
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)

    with Distillery(down_server.url, key=down_server.key, spool=spool) as api:
        api.flush()  # the start-up replay
        assert api.replay_spool().stored == []  # nothing left, nothing twice
    assert Spool(spool).keys() == [] and list(spool.glob("*.lock")) == []
    rows = {r["external_id"]: r for r in listed(down_server, "killed")}
    assert set(rows) == {"k-done", "k-open"}
    done = read(down_server, rows["k-done"]["id"])
    assert done["outcome"] == "success" and done["messages"][-1]["text"] == "done"
    unfinished = read(down_server, rows["k-open"]["id"])
    assert unfinished["outcome"] == "unknown" and unfinished["tags"] == ["unfinished"]
    assert unfinished["metadata"]["distillery"]["unfinished"] is True
    assert [m["role"] for m in unfinished["messages"]] == ["user", "assistant", "tool"]
    assert unfinished["messages"][1]["tool_calls"][0]["name"] == "search"
    assert unfinished["messages"][2]["text"] == "3 results" and unfinished["teacher_model"] == "m"
