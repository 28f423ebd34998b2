"""The lease-renewal thread that runs beside every job.

It writes through a ``LeaseWriter`` of the worker's store: a database connection of its own, so
the job never waits on the database and a slow statement elsewhere never delays a renewal. It
renews the lease every ``lease_seconds / 3`` under the attempt's token and writes the progress the
job reports in batches about once a second (the latest one into ``jobs.progress``, each one as a
progress event), so a training step costs no database round trip. Once a launcher has published the
lease for the job's ranks (``worker.fence.LeaseFence.rank_env``), each renewal refreshes that file.

It raises its ``abort`` event when the job must stop: a cancel was requested (seen at the next
renewal or progress write), the lease was lost (the database refused the token: another worker
may already run the job), or the lease could not be renewed before its renew deadline (5/6 of a
lease after the last successful renewal was sent: the database unreachable, this process paused or
starved). The deadline comes before the lease's expiry, so the job stops before anyone else can
claim it; past it, this thread writes nothing more (``worker.fence.Lease``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from worker.fence import Lease, write_lease_file
from worker.store import LeaseWriter, Store

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(
        self,
        store: Store,
        lease: Lease,
        *,
        interval: float | None = None,
        flush_interval: float = 1.0,
        lease_file: Path | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{lease.job_id}", daemon=True)
        self.lease = lease
        self.interval = interval if interval is not None else lease.lease_seconds / 3
        self.flush_interval = min(flush_interval, self.interval)
        self.lease_file = lease_file
        self.abort = threading.Event()
        self.cancel_requested = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._pending: list[dict[str, Any]] = []
        self._writer: LeaseWriter = store.lease_writer()  # connects on its first write
        self._extra = {"job_id": str(lease.job_id), "worker": lease.worker_id, "attempt": lease.attempt}

    @property
    def lease_lost(self) -> bool:
        """The attempt is over: its token was refused, or its renew deadline passed."""
        return not self.lease.held()

    def push_progress(self, progress: dict[str, Any]) -> None:
        """Queue a progress report; the thread stores it within about a second."""
        with self._lock:
            self._pending.append(progress)

    def should_abort(self) -> bool:
        # The deadline is checked here too: after a pause, the job may run before this thread wakes.
        return self.abort.is_set() or not self.lease.held()

    def stop(self) -> None:
        """Stop renewing after a last progress write; returns once the thread has ended."""
        self._done.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        if self.lease_file is not None and self.lease.held():  # an attempt that lost its lease writes nothing
            with contextlib.suppress(OSError):
                self.lease_file.unlink()

    def run(self) -> None:
        next_renewal = time.monotonic() + self.interval
        try:
            while self._check_deadline():
                now = time.monotonic()
                wait = min(self.flush_interval, max(0.0, next_renewal - now), max(0.0, self.lease.remaining()))
                if self._done.wait(wait):
                    if self._check_deadline():
                        self._write(renew=False)  # the job's last reports
                    return
                if not self._check_deadline():
                    return
                renew = time.monotonic() >= next_renewal
                if renew or self._pending:
                    self._write(renew=renew)
                if renew:
                    next_renewal = time.monotonic() + self.interval
        finally:
            self._writer.close()

    def _check_deadline(self) -> bool:
        """True while the lease is held; else abort the job (once) and say so."""
        if self.lease.held():
            return True
        if not self.abort.is_set():
            why = "lease lost" if self.lease.lost else "lease not renewed before its deadline: stopping the job"
            log.warning(why, extra=self._extra)
            self.abort.set()
        return False

    def _write(self, *, renew: bool) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if not renew and not batch:
            return
        lease = self.lease
        sent = lease.clock()
        try:
            result = self._writer.write(lease.job_id, lease.worker_id, lease.token, lease.lease_seconds, renew=renew,
                                        reports=batch)
        except Exception:
            log.warning("heartbeat failed", exc_info=True, extra=self._extra)
            with self._lock:  # keep the reports for the next try
                self._pending[:0] = batch
            return
        if not result.ok:
            lease.mark_lost()
            self._check_deadline()
            return
        if renew:
            lease.renewed(sent)
            self._publish()
        if result.cancel_requested and not self.cancel_requested:
            log.info("cancel requested", extra=self._extra)
            self.cancel_requested = True
            self.abort.set()

    def _publish(self) -> None:
        if self.lease_file is not None and self.lease_file.exists():  # only once ranks read it
            try:
                write_lease_file(self.lease_file, self.lease)
            except OSError:
                log.warning("could not publish the lease for the job's ranks", exc_info=True, extra=self._extra)
