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
  (at once when ``worker.context.is_permanent`` says retrying cannot help: the same rule the
  torchrun ranks apply through their exit code);
- lease lost meanwhile → nothing is written: the job is another worker's now; lease past its
  renew deadline (this process paused, the database unreachable) → handed back, if the token still
  holds it (a successor resumes from the checkpoint at once), else nothing.

Fencing (``worker.fence``): the claim's ``lease_token`` goes with every write of the attempt (events,
progress, the final state; refused by the database once the lease moved on), and the handler runs under
the attempt's ``LeaseFence`` (``ctx.fence``, and ``worker.fence.current_fence()`` for the trainer), which
guards its files. The worker advertises its GPUs and launchers (``worker.capabilities``) and claims only
jobs that fit them.

Options come from ``Settings`` (so from ``DISTILLERY_*`` variables): ``worker_lease_seconds``
(``DISTILLERY_WORKER_LEASE_SECONDS``, 60), ``worker_poll_interval`` (``…_POLL_INTERVAL``, 5),
``worker_kinds`` (``…_KINDS``, comma-separated; default every kind with a handler),
``worker_plugins`` (``…_PLUGINS``, see ``worker.handlers``), ``worker_listen`` (``…_LISTEN``;
false = poll only), ``worker_gpus`` and ``worker_launchers`` (``…_GPUS``, ``…_LAUNCHERS``: override what
is advertised). Arguments of ``run_worker`` override them.

The database is reached only through one ``worker.store.Store`` per worker (one engine), shared with
the heartbeat threads and, through the ``JobContext``, with the handlers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import orjson

from app.config import Settings
from contract.rundir import RunDir
from worker.capabilities import advertised
from worker.context import JobContext, PermanentJobError, is_permanent
from worker.fence import Lease, LeaseFence, use_fence
from worker.handlers import HANDLERS, load_plugins
from worker.heartbeat import Heartbeat
from worker.store import Capabilities, ClaimedJob, DatabaseError, Store, is_connection_error

log = logging.getLogger(__name__)

T = TypeVar("T")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _jsonable(value: Any) -> Any:
    # orjson writes NaN/inf as null (Postgres jsonb refuses them) and numpy/Path values as strings.
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY))


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
        # Handlers and plugins see the database this worker uses (also when it was resolved, e.g. embedded).
        self.job_settings = settings.model_copy(update={"database_url": database_url})
        self.id = worker_id
        self.kinds = kinds
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.stop = stop
        self.advertised = advertised(settings)  # ValueError: a launcher name it does not know
        self.can_run = Capabilities(gpus=self.advertised.gpus, launchers=self.advertised.launchers)
        self.store = Store(database_url, settings)

    def run(self, once: bool) -> int:
        listener = self.store.listener()
        if self.settings.worker_listen:
            listener.open()  # before the first claim, so no NOTIFY in between is missed
        try:
            self.store.prune_workers(max(3600.0, 10 * self.lease_seconds))
            self.store.register_worker(self.id, host=socket.gethostname(), pid=os.getpid(),
                                       devices=self.advertised.devices, kinds=self.kinds,
                                       launchers=self.advertised.launchers, lease_seconds=self.lease_seconds)
            log.info("worker started", extra={"worker": self.id, "kinds": self.kinds, "gpus": self.advertised.gpus,
                                              "launchers": list(self.advertised.launchers)})
            while not self.stop.is_set():
                try:
                    job = self.store.claim(self.id, self.lease_seconds, self.kinds, self.can_run)
                except DatabaseError as exc:
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
                self.store.remove_worker(self.id)
            except DatabaseError:
                log.warning("could not unregister worker", extra={"worker": self.id})
            self.store.close()
        log.info("worker stopped", extra={"worker": self.id})
        return 0

    # -- one job -----------------------------------------------------------------------------------------

    def run_job(self, job: ClaimedJob) -> None:
        job_id: uuid.UUID = job.id
        extra = {"job_id": str(job_id), "kind": job.kind, "attempt": job.attempts, "worker": self.id}
        log.info("job started", extra=extra)
        out_dir = self.settings.job_dir(job_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        lease = Lease(job_id, self.id, job.lease_token, job.attempts, self.lease_seconds, acquired_at=job.claimed_at)
        lease_file = RunDir(out_dir).lease_file(job.lease_token)
        fence = LeaseFence(lease, partial(self.store.renew, job_id, self.id, job.lease_token, self.lease_seconds),
                           lease_file=lease_file, verify_errors=(DatabaseError,))
        for stale in lease_file.parent.glob("*.json"):  # what earlier attempts of the job left
            stale.unlink(missing_ok=True)
        hb = Heartbeat(self.store, lease, lease_file=lease_file)
        ctx = JobContext(
            job_id=job_id, kind=job.kind, config=dict(job.config), attempt=job.attempts,
            max_attempts=job.max_attempts, dataset_id=job.dataset_id, out_dir=out_dir, settings=self.job_settings,
            store=self.store,
            _report_progress=partial(self._report_progress, hb, job.attempts),
            _log=partial(self._log, lease),
            _should_stop=lambda: self.stop.is_set() or hb.should_abort(),
            fence=fence,
        )
        result: dict[str, Any] | None = None
        error: str | None = None
        permanent = False
        hb.start()
        try:
            handler = HANDLERS.get(job.kind)
            if handler is None:
                raise PermanentJobError(f"this worker has no handler for job kind {job.kind!r}")
            with use_fence(fence):
                result = _jsonable(handler(ctx))
        except Exception as exc:
            error, permanent = traceback.format_exc(), is_permanent(exc)
        finally:
            hb.stop()
        self._retrying(lambda: self._settle(lease, hb, result, error, permanent))
        log.info("job settled", extra=extra)

    def _settle(
        self, lease: Lease, hb: Heartbeat, result: dict[str, Any] | None, error: str | None, permanent: bool
    ) -> None:
        job_id, token = lease.job_id, lease.token
        stopped = error is not None or (isinstance(result, dict) and result.get("status") == "stopped")
        extra = {"job_id": str(job_id), "worker": self.id, "attempt": lease.attempt}
        if lease.lost:  # another attempt holds the job: anything written now would be refused anyway
            log.warning("lease lost: the outcome of this attempt is dropped", extra=extra)
            return
        if not lease.held():  # the renew deadline passed: the attempt is over; hand the job back if still ours
            done = self.store.release(job_id, self.id, token=token, reason="lease not renewed in time")
            log.warning("lease not renewed in time: the outcome of this attempt is dropped; "
                        + ("handed the job back" if done else "another worker holds it"), extra=extra)
            return
        if hb.cancel_requested and stopped:
            done = self.store.finish(job_id, self.id, "cancelled", result=result, error=error, token=token)
        elif self.stop.is_set() and stopped:
            done = self.store.release(job_id, self.id, token=token)
        elif error is not None and permanent:
            done = self.store.finish(job_id, self.id, "failed", error=error, token=token)
        elif error is not None:
            done = self.store.fail_or_retry(job_id, self.id, error, token=token)
        elif stopped:  # stopped early without being asked to: resume later elsewhere
            done = self.store.release(job_id, self.id, token=token, reason="handler stopped early")
        else:
            done = self.store.finish(job_id, self.id, "succeeded", result=result, token=token)
        if not done:
            log.warning("lease lost before the job was settled", extra=extra)

    def _retrying(self, fn: Callable[[], T], tries: int = 3) -> T | None:
        """Settling must survive a short database outage; after that the lease expiry takes over."""
        for i in range(tries):
            try:
                return fn()
            except DatabaseError as exc:
                if not is_connection_error(exc) or i == tries - 1:
                    log.exception("could not settle the job")
                    return None
                time.sleep(2**i)
        return None

    def _report_progress(self, hb: Heartbeat, attempt: int, progress: dict[str, Any]) -> None:
        progress = _jsonable(progress)
        if "total" not in progress and "total_steps" in progress:
            progress["total"] = progress["total_steps"]
        progress.setdefault("attempt", attempt)  # which attempt made this step (a retry resumes mid-run)
        hb.push_progress(progress)  # written by the heartbeat thread: a step never waits on the database

    def _log(self, lease: Lease, message: str, level: str, data: dict[str, Any] | None) -> None:
        log.log(logging.getLevelName(level.upper()), message, extra={"job_id": str(lease.job_id)})
        if not lease.held():  # the attempt is over: its lines stay in the worker's own log
            return
        try:
            self.store.add_event(lease.job_id, "log", message, _jsonable(data) if data else None, level=level,
                                 token=lease.token)
        except DatabaseError:
            log.warning("could not store a job log line", extra={"job_id": str(lease.job_id)})


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
    try:
        worker = Worker(
            database_url, settings, worker_id=worker_id or new_worker_id(), kinds=kinds,
            poll_interval=poll_interval or settings.worker_poll_interval,
            lease_seconds=lease_seconds or settings.worker_lease_seconds,
            stop=stop,
        )
    except ValueError as exc:  # DISTILLERY_WORKER_LAUNCHERS names a launcher that does not exist
        log.error("%s", exc)
        return 2
    in_main = threading.current_thread() is threading.main_thread()
    restore = _install_signal_handlers(stop) if in_main else None
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
