"""A job's event log as Server-Sent Events: ``GET /v1/jobs/{id}/events/stream`` (or ``Accept: text/event-stream``).

Each ``job_events`` row is sent as ``id: <event id>`` / ``event: <kind>`` (state, progress, log, metric) /
``data: <the event as JSON>``. A stream reads the table when its job writes something: a trigger sends
a NOTIFY, the process's listener wakes the job's streams (``app.notify.JobWaiters``), and each reads
from a connection of the API's pool held only for the two statements of a read. An idle stream costs
no database work: without notifications (the listener reconnecting) it re-reads every
``FALLBACK_SECONDS``. A reconnecting client sends ``Last-Event-ID``
and gets what it missed. When the job is finished (and every event up to its last state change has
been sent) a final ``event: end`` with ``{"status": …}`` closes the stream. While nothing happens a
``: keep-alive`` comment goes out every ``heartbeat`` seconds so proxies keep the connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from anyio import to_thread

from app.db import Database
from app.jobs import repository as repo
from app.models.job import TERMINAL_STATUSES
from app.notify import JobWaiters

FALLBACK_SECONDS = 5.0
BATCH = 500


def format_event(row: Any) -> bytes:
    data = {"id": row.id, "job_id": row.job_id, "ts": row.ts, "kind": row.kind, "level": row.level,
            "message": row.message, "data": row.data}
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (row.id, row.kind.encode(), orjson.dumps(data))


def _poll(db: Database, job_id: uuid.UUID, after_id: int) -> tuple[str | None, list[Any]]:
    with db.sessionmaker() as session:
        # Status first: the events committed with a final status are then surely in the second read.
        status = repo.job_status(session, job_id)
        rows = repo.list_events(session, job_id, after_id, BATCH) if status is not None else []
        return status, rows


async def event_stream(db: Database, job_id: uuid.UUID, after_id: int, *, heartbeat: float,
                       disconnected: Callable[[], Awaitable[bool]], waiters: JobWaiters) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    quiet_since = time.monotonic()
    woken = waiters.register(job_id)  # before the first read: no notification can fall in between
    try:
        while True:
            woken.clear()
            status, rows = await to_thread.run_sync(_poll, db, job_id, after_id)
            for row in rows:
                yield format_event(row)
                after_id = row.id
            if status is None or (status in TERMINAL_STATUSES and len(rows) < BATCH):
                yield b"event: end\ndata: %s\n\n" % orjson.dumps({"status": status, "last_event_id": after_id})
                return
            if rows:
                quiet_since = time.monotonic()
                continue
            if await disconnected():
                return
            if time.monotonic() - quiet_since >= heartbeat:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            wait = min(FALLBACK_SECONDS, max(0.05, heartbeat - (time.monotonic() - quiet_since)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait)
    finally:
        waiters.unregister(job_id, woken)
