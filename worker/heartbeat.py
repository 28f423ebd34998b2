"""The lease-renewal thread that runs beside every job.

It writes through a ``LeaseWriter`` of the worker's store: a database connection of its own, so
the job never waits on the database and a slow statement elsewhere never delays a renewal. It
renews the lease every ``lease_seconds / 3`` and writes the progress the job reports in batches
about once a second (the latest one into ``jobs.progress``, each one as a progress event), so a
training step costs no database round trip. It raises its ``abort`` event when the job must stop:
a cancel was requested (seen at the next renewal or progress write), or the lease was lost (another
worker may already run the job). When the database stays unreachable for longer than a lease, the
lease is treated as lost too: by then another worker may legitimately have claimed the job.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from worker.store import LeaseWriter, Store

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(
        self,
        store: Store,
        job_id: uuid.UUID,
        worker_id: str,
        lease_seconds: float,
        *,
        interval: float | None = None,
        flush_interval: float = 1.0,
    ) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.job_id = job_id
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else lease_seconds / 3
        self.flush_interval = min(flush_interval, self.interval)
        self.abort = threading.Event()
        self.cancel_requested = False
        self.lease_lost = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._writer: LeaseWriter = store.lease_writer()  # connects on its first write
        self._last_ok = time.monotonic()

    def push_progress(self, progress: dict[str, Any]) -> None:
        """Queue a progress report; the thread stores it within about a second."""
        with self._lock:
            self._pending.append(progress)

    def should_abort(self) -> bool:
        return self.abort.is_set()

    def stop(self) -> None:
        """Stop renewing after a last progress write; returns once the thread has ended."""
        self._done.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()

    def run(self) -> None:
        next_renewal = time.monotonic() + self.interval
        try:
            while not self.lease_lost:
                wait = min(self.flush_interval, max(0.0, next_renewal - time.monotonic()))
                if self._done.wait(wait):
                    self._write(renew=False)  # the job's last reports
                    return
                renew = time.monotonic() >= next_renewal
                if renew or self._pending:
                    self._write(renew=renew)
                if renew:
                    next_renewal = time.monotonic() + self.interval
        finally:
            self._writer.close()

    def _write(self, *, renew: bool) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not renew and not batch:
            return
        try:
            result = self._writer.write(self.job_id, self.worker_id, self.lease_seconds, renew=renew, reports=batch)
        except Exception:
            log.warning("heartbeat failed", exc_info=True, extra={"job_id": str(self.job_id)})
            with self._lock:  # keep the reports for the next try
                self._pending[:0] = batch
            if time.monotonic() - self._last_ok > self.lease_seconds:
                log.error("lease presumed lost: database unreachable", extra={"job_id": str(self.job_id)})
                self.lease_lost = True
                self.abort.set()
            return
        self._last_ok = time.monotonic()
        if not result.ok:
            log.warning("lease lost", extra={"job_id": str(self.job_id), "worker": self.worker_id})
            self.lease_lost = True
            self.abort.set()
        elif result.cancel_requested and not self.cancel_requested:
            log.info("cancel requested", extra={"job_id": str(self.job_id)})
            self.cancel_requested = True
            self.abort.set()
