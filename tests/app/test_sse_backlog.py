"""A job's SSE stream sends every event before its final ``end``, however many are waiting.

The stream reads the event log in batches (``app.jobs.stream.BATCH``); a finished job with more unsent
events than one batch must not end the stream after the first batch. Checked from the start and from a
``Last-Event-ID`` in the middle.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from app.jobs import queue
from app.jobs.stream import BATCH
from distillery.client import _parse_sse


def _finished_job_with_events(database: Any, n: int) -> uuid.UUID:
    with database.engine.begin() as conn:
        job_id = queue.enqueue(conn, "distill", {})
        queue.claim(conn, "w-backlog", 60, ["distill"])
        for i in range(n):
            queue.add_event(conn, job_id, "log", f"line {i}")
        assert queue.finish(conn, job_id, "w-backlog", "succeeded", result={})
    return job_id


def _stream(client: TestClient, job_id: uuid.UUID, **headers: str) -> list[Any]:
    with client.stream("GET", f"/v1/jobs/{job_id}/events/stream", headers=headers) as r:
        assert r.status_code == 200
        return list(_parse_sse(r.iter_lines()))


def test_a_finished_job_streams_its_whole_backlog(committed_client: TestClient, database: Any) -> None:
    n = 2 * BATCH + 37
    job_id = _finished_job_with_events(database, n)
    stored = committed_client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
    events = _stream(committed_client, job_id)
    assert events[-1].event == "end"
    sent = events[:-1]
    ids = [e.id for e in sent]
    assert len(sent) == n + 3  # queued, running, the log lines, succeeded
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [e.data["message"] for e in sent if e.event == "log" and e.data["message"].startswith("line ")] == [
        f"line {i}" for i in range(n)]
    assert sent[-1].event == "state" and sent[-1].data["data"] == {"status": "succeeded"}
    assert events[-1].data == {"status": "succeeded", "last_event_id": ids[-1]}
    assert stored["items"][0]["id"] == ids[0]


def test_a_reconnect_in_the_middle_of_the_backlog_gets_the_rest(committed_client: TestClient, database: Any) -> None:
    job_id = _finished_job_with_events(database, 3 * BATCH)
    everything = _stream(committed_client, job_id)
    middle = everything[BATCH // 2].id
    rest = _stream(committed_client, job_id, **{"Last-Event-ID": str(middle)})
    assert [e.id for e in rest] == [e.id for e in everything if e.id is not None and int(e.id) > int(middle)] + [None]
    assert rest[-1].event == "end" and rest[-1].data["last_event_id"] == everything[-1].data["last_event_id"]
