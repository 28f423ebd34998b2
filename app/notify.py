"""One LISTEN connection per API process: key revocations and job events reach every process at once.

Triggers (migration ``a7e3c1f09d21``) send ``distillery_keys`` (the id of a key updated or deleted,
by the API or by ``distillery keys revoke`` alike) and ``distillery_job_events`` (the id of a job that
wrote an event or changed status). A daemon thread holds the connection and hands each notification
to the handlers: the key cache evicts the key (so revocation takes effect in every process within
the delivery time of a NOTIFY, milliseconds, instead of ``auth_cache_seconds``), and ``JobWaiters``
wakes the SSE streams of that job, which then read the new rows. When the connection is lost, the
handlers' ``on_reset`` runs after reconnecting (the key cache is cleared: revocations may have been
missed; every stream re-reads), and streams fall back to polling until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

log = logging.getLogger(__name__)

KEYS_CHANNEL = "distillery_keys"
JOB_EVENTS_CHANNEL = "distillery_job_events"


@dataclass(frozen=True)
class Handler:
    on_notify: Callable[[str], None]
    on_reset: Callable[[], None]


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://``) as a libpq one."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class Listener:
    def __init__(self, url: str, handlers: dict[str, Handler]) -> None:
        self.url = libpq_url(url)
        self.handlers = handlers
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="distillery-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    for channel in self.handlers:
                        conn.execute(f'LISTEN "{channel}"')
                    self.connected.set()
                    for handler in self.handlers.values():
                        handler.on_reset()
                    delay = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            target = self.handlers.get(note.channel)
                            if target is not None:
                                target.on_notify(note.payload)
            except Exception as exc:  # the database went away: keep trying, streams poll meanwhile
                log.warning("notification listener disconnected", extra={"error_class": type(exc).__name__})
            self.connected.clear()
            self._stop.wait(delay)
            delay = min(delay * 2, 10.0)


class JobWaiters:
    """SSE streams waiting for their job: each holds an event that a notification for the job sets."""

    def __init__(self) -> None:
        self._waiting: dict[uuid.UUID, dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._lock = threading.Lock()

    def register(self, job_id: uuid.UUID) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._waiting.setdefault(job_id, {})[id(event)] = (asyncio.get_running_loop(), event)
        return event

    def unregister(self, job_id: uuid.UUID, event: asyncio.Event) -> None:
        with self._lock:
            waiting = self._waiting.get(job_id, {})
            waiting.pop(id(event), None)
            if not waiting:
                self._waiting.pop(job_id, None)

    def _wake(self, targets: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in targets:
            with contextlib.suppress(RuntimeError):  # that loop is closed: its stream is gone
                loop.call_soon_threadsafe(event.set)

    def notify(self, payload: str) -> None:
        try:
            job_id = uuid.UUID(payload)
        except ValueError:
            return
        with self._lock:
            targets = list(self._waiting.get(job_id, {}).values())
        self._wake(targets)

    def wake_all(self) -> None:
        with self._lock:
            targets = [t for waiting in self._waiting.values() for t in waiting.values()]
        self._wake(targets)
