"""The worker loop: wait (LISTEN/poll) → claim → run the handler under a lease → settle.

One worker runs one job at a time. It waits on ``LISTEN distillery_jobs`` with a timeout of
``poll_interval`` (the polling fallback, which also picks up expired leases and retries whose
backoff ended), claims a job, and runs its handler while a ``Heartbeat`` thread renews the
lease. The job is then settled:

- returned normally → ``succeeded`` with the handler's dict as result;
- stopped (returned ``{"status": "stopped"}`` or raised) because a cancel was requested →
  ``cancelled``;
- stopped because the worker is shutting down (SIGTERM/SIGINT, or the stop function of a
  background worker) → handed back: queued again at once, the attempt not counted;
- raised → retried with backoff, or ``failed`` with the traceback when no attempt is left
  (at once for ``PermanentJobError``);
- lease lost meanwhile → nothing is written: the job is another worker's now.

Options come from ``Settings`` (so from ``DISTILLERY_*`` variables): ``worker_lease_seconds``
(``DISTILLERY_WORKER_LEASE_SECONDS``, 60), ``worker_poll_interval`` (``…_POLL_INTERVAL``, 5),
``worker_kinds`` (``…_KINDS``, comma-separated; default every kind with a handler),
``worker_plugins`` (``…_PLUGINS``, see ``worker.handlers``) and ``worker_listen`` (``…_LISTEN``;
false = poll only). Arguments of ``run_worker`` override them.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import orjson
import psycopg
from sqlalchemy import Row
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db import Database
from app.errors import is_connection_error
from app.jobs import queue
from worker.handlers import HANDLERS, JobContext, PermanentJobError, load_plugins
from worker.heartbeat import Heartbeat

log = logging.getLogger(__name__)

T = TypeVar("T")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def detect_devices() -> list[dict[str, Any]]:
    """CUDA devices seen by torch; [] on a CPU-only machine (torch is not even imported there)."""
    if "torch" not in sys.modules and not glob.glob("/dev/nvidia[0-9]*"):
        return []
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    return devices


def _jsonable(value: Any) -> Any:
    # orjson writes NaN/inf as null (Postgres jsonb refuses them) and numpy/Path values as strings.
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY))


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


class Worker:
    def __init__(
        self,
        database_url: str,
        settings: Settings,
        *,
        worker_id: str,
        kinds: list[str],
        poll_interval: float,
        lease_seconds: float,
        stop: threading.Event,
    ) -> None:
        self.database_url = database_url
        self.settings = settings
        # Handlers get the database this worker actually uses (also when it was resolved, e.g. embedded).
        self.job_settings = settings.model_copy(update={"database_url": database_url})
        self.id = worker_id
        self.kinds = kinds
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.stop = stop
        self.db = Database(database_url, settings)
        self.engine = self.db.engine

    def run(self, once: bool) -> int:
        listener = Listener(self.database_url)
        if self.settings.worker_listen:
            listener.open()  # before the first claim, so no NOTIFY in between is missed
        try:
            with self.engine.begin() as conn:
                queue.prune_workers(conn, max(3600.0, 10 * self.lease_seconds))
                queue.register_worker(conn, self.id, host=socket.gethostname(), pid=os.getpid(),
                                      devices=detect_devices(), kinds=self.kinds)
            log.info("worker started", extra={"worker": self.id, "kinds": self.kinds})
            while not self.stop.is_set():
                try:
                    with self.engine.begin() as conn:
                        job = queue.claim(conn, self.id, self.lease_seconds, self.kinds)
                        queue.worker_heartbeat(conn, self.id, job.id if job is not None else None)
                except DBAPIError as exc:
                    if not is_connection_error(exc):
                        raise
                    log.warning("database unavailable; retrying", extra={"worker": self.id})
                    self.stop.wait(self.poll_interval)
                    continue
                if job is not None:
                    self.run_job(job)
                    if once:
                        break
                    continue  # more may be waiting: claim again before sleeping
                if once:
                    break
                if self.settings.worker_listen:
                    listener.wait(self.poll_interval, self.stop)
                else:
                    self.stop.wait(self.poll_interval)
        finally:
            listener.close()
            try:
                with self.engine.begin() as conn:
                    queue.remove_worker(conn, self.id)
            except DBAPIError:
                log.warning("could not unregister worker", extra={"worker": self.id})
            self.db.dispose()
        log.info("worker stopped", extra={"worker": self.id})
        return 0

    # -- one job -----------------------------------------------------------------------------------------

    def run_job(self, job: Row[Any]) -> None:
        job_id: uuid.UUID = job.id
        extra = {"job_id": str(job_id), "kind": job.kind, "attempt": job.attempts, "worker": self.id}
        log.info("job started", extra=extra)
        out_dir = self.settings.job_dir(job_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        hb = Heartbeat(self.engine, job_id, self.id, self.lease_seconds)
        ctx = JobContext(
            job_id=job_id, kind=job.kind, config=dict(job.config or {}), attempt=job.attempts,
            max_attempts=job.max_attempts, dataset_id=job.dataset_id, out_dir=out_dir, settings=self.job_settings,
            _report_progress=partial(self._report_progress, hb),
            _log=partial(self._log, job_id),
            _should_stop=lambda: self.stop.is_set() or hb.should_abort(),
        )
        result: dict[str, Any] | None = None
        error: str | None = None
        permanent = False
        hb.start()
        try:
            handler = HANDLERS.get(job.kind)
            if handler is None:
                raise PermanentJobError(f"this worker has no handler for job kind {job.kind!r}")
            result = _jsonable(handler(ctx))
        except PermanentJobError:
            error, permanent = traceback.format_exc(), True
        except Exception:
            error = traceback.format_exc()
        finally:
            hb.stop()
        self._retrying(lambda: self._settle(job_id, hb, result, error, permanent))
        log.info("job settled", extra=extra)

    def _settle(
        self, job_id: uuid.UUID, hb: Heartbeat, result: dict[str, Any] | None, error: str | None, permanent: bool
    ) -> None:
        stopped = error is not None or (isinstance(result, dict) and result.get("status") == "stopped")
        with self.engine.begin() as conn:
            if hb.lease_lost:
                queue.add_event(conn, job_id, "log", f"worker {self.id} lost its lease; its outcome was dropped",
                                level="warning")
                return
            if hb.cancel_requested and stopped:
                done = queue.finish(conn, job_id, self.id, "cancelled", result=result, error=error)
            elif self.stop.is_set() and stopped:
                done = queue.release(conn, job_id, self.id) is not None
            elif error is not None and permanent:
                done = queue.finish(conn, job_id, self.id, "failed", error=error)
            elif error is not None:
                done = queue.fail_or_retry(conn, job_id, self.id, error) is not None
            elif stopped:  # stopped early without being asked to: resume later elsewhere
                done = queue.release(conn, job_id, self.id, reason="handler stopped early") is not None
            else:
                done = queue.finish(conn, job_id, self.id, "succeeded", result=result)
            queue.worker_heartbeat(conn, self.id, None)
        if not done:
            log.warning("lease lost before the job was settled", extra={"job_id": str(job_id), "worker": self.id})

    def _retrying(self, fn: Callable[[], T], tries: int = 3) -> T | None:
        """Settling must survive a short database outage; after that the lease expiry takes over."""
        for i in range(tries):
            try:
                return fn()
            except DBAPIError as exc:
                if not is_connection_error(exc) or i == tries - 1:
                    log.exception("could not settle the job")
                    return None
                time.sleep(2**i)
        return None

    def _report_progress(self, hb: Heartbeat, progress: dict[str, Any]) -> None:
        progress = _jsonable(progress)
        if "total" not in progress and "total_steps" in progress:
            progress["total"] = progress["total_steps"]
        hb.push_progress(progress)  # written by the heartbeat thread: a step never waits on the database

    def _log(self, job_id: uuid.UUID, message: str, level: str, data: dict[str, Any] | None) -> None:
        log.log(logging.getLevelName(level.upper()), message, extra={"job_id": str(job_id)})
        try:
            with self.engine.begin() as conn:
                queue.add_event(conn, job_id, "log", message, _jsonable(data) if data else None, level=level)
        except DBAPIError:
            log.warning("could not store a job log line", extra={"job_id": str(job_id)})


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT ask for a graceful stop; a second signal gets the default (immediate) action."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping: the running job checkpoints and is handed back", extra={"signal": signum})
        stop.set()
        for sig in previous:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    for sig in previous:
        signal.signal(sig, on_signal)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def run_worker(
    database_url: str,
    settings: Settings,
    *,
    once: bool = False,
    worker_id: str | None = None,
    kinds: list[str] | None = None,
    poll_interval: float | None = None,
    lease_seconds: float | None = None,
    stop_event: threading.Event | None = None,
) -> int:
    """Run a worker until stopped (SIGTERM/SIGINT in the main thread, or ``stop_event``); the exit code.

    ``once``: process at most one job (none queued → return at once). ``kinds``, ``poll_interval``
    and ``lease_seconds`` default to the settings (see the module docstring).
    """
    load_plugins(settings.worker_plugins)
    if kinds is None:
        kinds = settings.worker_kinds
    kinds = sorted(HANDLERS) if kinds is None else list(kinds)
    unknown = sorted(set(kinds) - set(HANDLERS))
    if unknown or not kinds:
        log.error("no handler for job kinds %s (known: %s)", unknown or "(none given)", sorted(HANDLERS))
        return 2
    stop = stop_event or threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    restore = _install_signal_handlers(stop) if in_main else None
    worker = Worker(
        database_url, settings, worker_id=worker_id or new_worker_id(), kinds=kinds,
        poll_interval=poll_interval or settings.worker_poll_interval,
        lease_seconds=lease_seconds or settings.worker_lease_seconds,
        stop=stop,
    )
    try:
        return worker.run(once)
    except Exception:
        log.exception("worker crashed", extra={"worker": worker.id})
        return 1
    finally:
        if restore is not None:
            restore()


def start_background_worker(database_url: str, settings: Settings, **options: Any) -> Callable[[], None]:
    """Run a worker in a daemon thread (``distillery serve --with-worker``); returns its stop function.

    Stopping hands a running job back (like SIGTERM) and waits for the thread to end.
    """
    stop = threading.Event()
    thread = threading.Thread(
        target=run_worker, args=(database_url, settings), kwargs={**options, "stop_event": stop},
        name="distillery-worker", daemon=True,
    )
    thread.start()

    def stop_worker() -> None:
        stop.set()
        thread.join()

    return stop_worker
