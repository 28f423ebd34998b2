"""The worker's data access: the only worker module that talks to the database.

One ``Store`` per worker process holds one engine (its pool serves the loop, the job handlers and
the heartbeat threads) and exposes what a worker does with the database, each call one transaction:
the worker registry (``register_worker``, ``prune_workers``, ``worker_heartbeat``,
``remove_worker``), the job lifecycle (``claim``, ``add_event``, ``finish``, ``release``,
``fail_or_retry``), the lease (``renew``, and ``lease_writer``: renewal and progress on a dedicated
connection), wake-ups (``listener``: LISTEN on the queue channel) and the one read a job makes
(``load_dataset_records``). The SQL itself lives in ``app.jobs.queue`` and ``app.datasets.records``.

Fencing: every write about a claimed job takes the attempt's ``token`` (``ClaimedJob.lease_token``) and
is refused by its statement once the job's lease has moved on (``False`` / ``ok=False``).

``is_connection_error`` says whether a ``DatabaseError`` means "the database is unreachable" (wait
and retry) rather than a bug.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.datasets.records import load_records
from app.db import Database
from app.errors import is_connection_error
from app.jobs import queue
from app.jobs.queue import Capabilities, FinalStatus, HeartbeatResult
from contract.spans import DatasetRecord
from worker.context import PermanentJobError

__all__ = ["Capabilities", "ClaimedJob", "DatabaseError", "HeartbeatResult", "LeaseWriter", "Listener", "Store",
           "is_connection_error"]

log = logging.getLogger(__name__)

DatabaseError = SQLAlchemyError  # what a store call raises when the database fails


@dataclass(frozen=True)
class ClaimedJob:
    """The job a worker holds the lease of (``attempts`` counts this attempt; ``lease_token`` fences its
    writes; ``claimed_at``: ``time.monotonic()`` when the claim was sent, where the lease's clock starts)."""

    id: uuid.UUID
    kind: str
    config: dict[str, Any]
    attempts: int
    max_attempts: int
    dataset_id: uuid.UUID | None
    lease_token: uuid.UUID
    claimed_at: float


class Store:
    def __init__(self, database_url: str, settings: Settings) -> None:
        self.url = database_url
        self._db = Database(database_url, settings)
        self._engine = self._db.engine

    def close(self) -> None:
        self._db.dispose()

    # -- the worker registry ------------------------------------------------------------------------------

    def prune_workers(self, older_than_seconds: float) -> int:
        """Forget workers silent for longer than that (killed processes); how many."""
        with self._engine.begin() as conn:
            return queue.prune_workers(conn, older_than_seconds)

    def register_worker(self, worker_id: str, *, host: str, pid: int, devices: list[dict[str, Any]],
                        kinds: list[str], launchers: tuple[str, ...], lease_seconds: float) -> None:
        with self._engine.begin() as conn:
            queue.register_worker(conn, worker_id, host=host, pid=pid, devices=devices, kinds=kinds,
                                  launchers=launchers, lease_seconds=lease_seconds)

    def worker_heartbeat(self, worker_id: str, current_job_id: uuid.UUID | None) -> None:
        with self._engine.begin() as conn:
            queue.worker_heartbeat(conn, worker_id, current_job_id)

    def remove_worker(self, worker_id: str) -> None:
        with self._engine.begin() as conn:
            queue.remove_worker(conn, worker_id)

    # -- the job lifecycle --------------------------------------------------------------------------------

    def claim(self, worker_id: str, lease_seconds: float, kinds: list[str], can_run: Capabilities | None = None
              ) -> ClaimedJob | None:
        """Lease the best runnable job of these kinds that ``can_run`` fits (and mark the worker alive, on it
        or idle)."""
        sent = time.monotonic()
        with self._engine.begin() as conn:
            row = queue.claim(conn, worker_id, lease_seconds, kinds, can_run)
            queue.worker_heartbeat(conn, worker_id, row.id if row is not None else None)
        if row is None:
            return None
        return ClaimedJob(id=row.id, kind=row.kind, config=dict(row.config or {}), attempts=row.attempts,
                          max_attempts=row.max_attempts, dataset_id=row.dataset_id, lease_token=row.lease_token,
                          claimed_at=sent)

    def add_event(self, job_id: uuid.UUID, kind: queue.EventKind, message: str,
                  data: dict[str, Any] | None = None, *, level: str = "info", token: uuid.UUID) -> bool:
        """An event of the attempt holding ``token``; False (nothing written) once its lease moved on."""
        with self._engine.begin() as conn:
            return queue.add_event(conn, job_id, kind, message, data, level=level, token=token)

    def renew(self, job_id: uuid.UUID, worker_id: str, token: uuid.UUID, lease_seconds: float) -> bool:
        """Renew the attempt's lease now (the fence's check before it promotes a file); False when lost."""
        with self._engine.begin() as conn:
            return queue.heartbeat(conn, job_id, worker_id, lease_seconds, token=token).ok

    # Settling a job frees its worker: the worker row is marked idle in the same transaction.

    def finish(self, job_id: uuid.UUID, worker_id: str, status: FinalStatus, *, token: uuid.UUID,
               result: dict[str, Any] | None = None, error: str | None = None) -> bool:
        """Settle the job; False (nothing written) when the lease was lost."""
        with self._engine.begin() as conn:
            done = queue.finish(conn, job_id, worker_id, status, result=result, error=error, token=token)
            queue.worker_heartbeat(conn, worker_id, None)
        return done

    def release(self, job_id: uuid.UUID, worker_id: str, *, token: uuid.UUID,
                reason: str = "worker shutting down") -> bool:
        """Hand the job back (queued at once, the attempt given back); False when the lease was lost."""
        with self._engine.begin() as conn:
            status = queue.release(conn, job_id, worker_id, reason=reason, token=token)
            queue.worker_heartbeat(conn, worker_id, None)
        return status is not None

    def fail_or_retry(self, job_id: uuid.UUID, worker_id: str, error: str, *, token: uuid.UUID) -> bool:
        """Record a failed attempt (retried with backoff while attempts remain); False when the lease was lost."""
        with self._engine.begin() as conn:
            status = queue.fail_or_retry(conn, job_id, worker_id, error, token=token)
            queue.worker_heartbeat(conn, worker_id, None)
        return status is not None

    def lease_writer(self) -> LeaseWriter:
        """A dedicated connection for one job's heartbeat thread (see ``LeaseWriter``)."""
        return LeaseWriter(self._engine.connect)

    def listener(self) -> Listener:
        return Listener(self.url)

    # -- what a job reads ---------------------------------------------------------------------------------

    def load_dataset_records(self, dataset_id: uuid.UUID) -> list[DatasetRecord]:
        """Every record of the dataset's immutable snapshot, in position order (``split`` included).

        A dataset that does not exist or holds nothing is a ``PermanentJobError``: retrying cannot fix it.
        """
        with self._db.sessionmaker() as session:
            records = load_records(session, dataset_id)
        if records is None:
            raise PermanentJobError(f"dataset {dataset_id} not found")
        if not records:
            raise PermanentJobError(f"dataset {dataset_id} is empty")
        return records


class LeaseWriter:
    """Lease renewal and progress writes on one connection of their own, so a job never waits on the
    database and a slow statement elsewhere never delays a renewal. After a failure the connection is
    dropped (and the error raised); the next write opens a fresh one."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self._connect = connect
        self._conn: Connection | None = None

    def write(self, job_id: uuid.UUID, worker_id: str, token: uuid.UUID, lease_seconds: float, *, renew: bool,
              reports: list[dict[str, Any]]) -> HeartbeatResult:
        """Renew the lease (``renew``) and/or store ``reports``, in one transaction, for the attempt holding
        ``token``; says whether the lease is still held and whether a cancel was requested."""
        if not renew and not reports:
            raise ValueError("LeaseWriter.write() needs a renewal or a report")
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            with conn.begin():
                if renew:
                    result = queue.heartbeat(conn, job_id, worker_id, lease_seconds, token=token)
                    queue.worker_heartbeat(conn, worker_id, job_id if result.ok else None)
                if reports and (not renew or result.ok):
                    result = queue.set_progress(conn, job_id, worker_id, reports, token=token)
        except BaseException:
            self._drop()
            raise
        return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self.close()


class Listener:
    """A dedicated autocommit psycopg connection that LISTENs on the queue channel."""

    def __init__(self, database_url: str) -> None:
        self.conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn: psycopg.Connection[Any] | None = None

    def open(self) -> bool:
        try:
            self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            self.conn.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
            return True
        except psycopg.Error as exc:
            log.warning("LISTEN unavailable, polling only: %s", exc.__class__.__name__)
            self.close()
            return False

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Block until a notification, ``timeout`` seconds, or ``stop``; True when notified."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.conn is None and not self.open():
                stop.wait(min(left, 1.0))
                continue
            assert self.conn is not None
            try:
                # Short slices so that a stop request is seen within half a second.
                for _ in self.conn.notifies(timeout=min(left, 0.5), stop_after=1):
                    return True
            except psycopg.Error:
                log.warning("LISTEN connection lost; reconnecting")
                self.close()
        return False

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
