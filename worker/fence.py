"""Fencing: an attempt that has lost its job's lease writes nothing more, to the database or to the run directory.

Each claim issues a fresh lease token (``jobs.lease_token``). Database writes carry it and are refused by the
statement itself once the job's token is another (``app.jobs.queue``). A filesystem cannot compare tokens, so
files are fenced by their writer: everything an attempt makes visible is assembled out of sight (a hidden,
attempt-scoped ``scratch`` path) and **promoted** by an atomic rename right after a verified check, and appends
(``metrics.jsonl``) follow a ``check``.

- ``Lease``: the attempt's lease as this process knows it. It is held until the *renew deadline*: the time the
  last successful renewal was sent plus ``RENEW_DEADLINE`` (5/6) of the lease. The database's expiry is at least
  that send time plus the whole lease, so while the local lease is held nobody else can have claimed the job;
  past the deadline the attempt is over for good (the heartbeat aborts the job; no fence passes again, even if
  the database would still take a renewal, so the outcome never depends on which thread wakes first after a
  pause). ``monotonic`` time keeps running while a process is stopped (SIGSTOP), so a resumed process sees it.
- ``LeaseFence`` (the worker process: in-process training, the launchers): ``check`` is the local deadline;
  ``promote`` first renews the lease in the database under the token (one round trip: the verified check),
  then renames.
- ``FileFence`` (torchrun and Slurm ranks, which never reach the database): the worker's heartbeat writes the
  deadline, as wall-clock time, into ``RunDir.lease_file(token)`` after every renewal; a rank passes while its
  token's file says the lease is held (``DISTILLERY_LEASE_FILE``, set by the launchers). So ranks stop by
  themselves when their worker stops renewing (paused, hung, dead), before the lease can expire. Across Slurm
  nodes this assumes clocks agree to well within the margin (1/6 of the lease: 10 s by default).
- ``Unfenced``: training outside a worker (tests, benchmarks, ``python -m worker.training.train`` by hand).

The worker runs each handler under its attempt's ``LeaseFence`` (``use_fence``); ``current_fence()`` is what
the trainer's writes go through (``worker.training.checkpoint``): that fence, else the one its environment names.

Residual window (documented in ``docs/reliability.md``): a check and the write after it are two steps. A process
paused between a passed check and its rename or append for longer than the time its lease had left (at least
a whole lease after ``promote``'s renewal; at least 1/6 of a lease after a ``check``) may still land that one
write after a successor started. The write is then one complete file or directory (a valid checkpoint of the
same run, a metrics line): nothing half-written, and nothing after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

RENEW_DEADLINE = 5 / 6  # of the lease: an attempt that could not renew for this long stops (before the expiry)
LEASE_FILE_ENV = "DISTILLERY_LEASE_FILE"
ATTEMPT_ENV = "DISTILLERY_LEASE_ATTEMPT"


class LeaseLost(Exception):
    """This attempt no longer holds its job's lease (or can no longer prove it): stop and write nothing more.

    Not a permanent error: the worker settles the job by the lease's state (another worker runs it, or it is
    handed back)."""


class Fence(Protocol):
    """What guards the files of one attempt (see the module docstring)."""

    label: str  # names the attempt's scratch paths

    def check(self) -> None:
        """Raise ``LeaseLost`` unless the lease is held (cheap: no I/O for the worker's own fence)."""

    def held(self) -> bool:
        """``check`` as a bool."""

    def promote(self, src: Path, dst: Path) -> None:
        """Verify the lease, then move ``src`` (file or directory) to ``dst`` atomically, replacing it."""

    def scratch(self, dst: Path) -> Path:
        """Where to assemble ``dst`` before ``promote``: a hidden, attempt-scoped sibling (not listed as an
        artifact; an earlier copy is removed)."""

    def stamp(self) -> dict[str, Any]:
        """What identifies the attempt in what it writes (``attempt``, ``lease_token``), for checkpoint metas."""

    def rank_env(self) -> dict[str, str]:
        """The environment that gives a rank process the matching ``FileFence`` (``fence_from_env``)."""


def replace(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` atomically; a directory at ``dst`` is swapped out first, then removed."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


class _Fence:
    label = ""

    def check(self) -> None:
        raise NotImplementedError

    def held(self) -> bool:
        try:
            self.check()
        except LeaseLost:
            return False
        return True

    def verify(self) -> None:
        self.check()

    def promote(self, src: Path, dst: Path) -> None:
        try:
            self.verify()
        except LeaseLost:
            discard(src)
            raise
        replace(src, dst)

    def scratch(self, dst: Path) -> Path:
        path = dst.with_name(f".{dst.name}.{self.label}")
        discard(path)
        return path

    def stamp(self) -> dict[str, Any]:
        return {}

    def rank_env(self) -> dict[str, str]:
        return {}


def discard(path: Path) -> None:
    """Remove a scratch file or directory, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Unfenced(_Fence):
    """No lease to guard: every check passes."""

    def __init__(self) -> None:
        self.label = f"pid{os.getpid()}"

    def check(self) -> None:
        return None


class Lease:
    """One attempt's lease on a job, as this process knows it (thread-safe)."""

    def __init__(self, job_id: uuid.UUID, worker_id: str, token: uuid.UUID, attempt: int, lease_seconds: float,
                 *, acquired_at: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id, self.worker_id, self.token, self.attempt = job_id, worker_id, token, attempt
        self.lease_seconds = lease_seconds
        self.lost = False  # the database refused the token: another attempt holds the job
        self.clock = clock  # monotonic: it keeps running while the process is stopped
        self._lock = threading.Lock()
        self._deadline = acquired_at + lease_seconds * RENEW_DEADLINE

    def held(self) -> bool:
        return not self.lost and self.clock() < self._deadline

    def remaining(self) -> float:
        """Seconds until the renew deadline (≤ 0 once past it)."""
        return self._deadline - self.clock()

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at ``sent_at`` (monotonic) succeeded; past the deadline it no longer counts."""
        with self._lock:
            if self.held():
                self._deadline = max(self._deadline, sent_at + self.lease_seconds * RENEW_DEADLINE)

    def mark_lost(self) -> None:
        self.lost = True


class LeaseFence(_Fence):
    """The worker process's fence: the local deadline, and a renewal in the database before each promotion."""

    def __init__(self, lease: Lease, renew: Callable[[], bool], *, lease_file: Path | None = None,
                 verify_errors: tuple[type[BaseException], ...] = ()) -> None:
        self.lease, self._renew, self.lease_file = lease, renew, lease_file
        self._verify_errors = verify_errors
        self.label = f"attempt-{lease.token.hex[:12]}"

    def check(self) -> None:
        if not self.lease.held():
            why = "another attempt holds it" if self.lease.lost else "it could not be renewed in time"
            raise LeaseLost(f"attempt {self.lease.attempt} lost the lease of job {self.lease.job_id}: {why}")

    def verify(self) -> None:
        self.check()
        sent = self.lease.clock()
        try:
            ok = self._renew()
        except self._verify_errors:
            # The database is unreachable: the local deadline (checked above) still proves the lease held.
            return
        if not ok:
            self.lease.mark_lost()
        else:
            self.lease.renewed(sent)
        self.check()

    def stamp(self) -> dict[str, Any]:
        return {"attempt": self.lease.attempt, "lease_token": str(self.lease.token)}

    def rank_env(self) -> dict[str, str]:
        """Publishes the lease file (the heartbeat keeps it fresh from then on) and names it for the ranks."""
        if self.lease_file is None:
            return {}
        write_lease_file(self.lease_file, self.lease)
        return {LEASE_FILE_ENV: str(self.lease_file), ATTEMPT_ENV: str(self.lease.attempt)}


def write_lease_file(path: Path, lease: Lease) -> None:
    """Publish the lease's deadline (wall clock) for the ranks' ``FileFence``; atomic, and only while held."""
    remaining = lease.remaining()
    if lease.lost or remaining <= 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")  # the heartbeat and a launcher may both write
    tmp.write_text(json.dumps({"token": str(lease.token), "attempt": lease.attempt,
                               "valid_until": time.time() + remaining}))
    os.replace(tmp, path)


class FileFence(_Fence):
    """A rank's fence: its attempt's lease file must name its token and a deadline still ahead."""

    def __init__(self, path: Path, attempt: int | None = None) -> None:
        self.path, self.attempt = path, attempt
        self.token = path.stem
        self.label = f"attempt-{self.token.replace('-', '')[:12]}"

    def check(self) -> None:
        try:
            lease = json.loads(self.path.read_text())
            valid_until, token = float(lease["valid_until"]), str(lease["token"])
        except (OSError, ValueError, KeyError, TypeError):
            raise LeaseLost(f"no readable lease at {self.path}: the worker's lease is gone") from None
        if token != self.token or time.time() >= valid_until:
            raise LeaseLost(f"the lease of {self.path} expired: the worker stopped renewing it")

    def stamp(self) -> dict[str, Any]:
        return {"lease_token": self.token, **({"attempt": self.attempt} if self.attempt is not None else {})}

    def rank_env(self) -> dict[str, str]:
        return {LEASE_FILE_ENV: str(self.path), **({ATTEMPT_ENV: str(self.attempt)} if self.attempt else {})}


def fence_from_env(environ: dict[str, str] | None = None) -> Fence:
    """The fence a training process runs under: ``FileFence`` when a launcher set ``DISTILLERY_LEASE_FILE``."""
    env = os.environ if environ is None else environ
    path = env.get(LEASE_FILE_ENV)
    if not path:
        return Unfenced()
    attempt = env.get(ATTEMPT_ENV, "")
    return FileFence(Path(path), int(attempt) if attempt.isdigit() else None)


_CURRENT: ContextVar[Fence | None] = ContextVar("distillery_fence", default=None)


def current_fence() -> Fence:
    """The fence of the job running in this thread (``use_fence``), else ``fence_from_env()``."""
    return _CURRENT.get() or fence_from_env()


@contextlib.contextmanager
def use_fence(fence: Fence) -> Iterator[Fence]:
    """Run a block (a job's handler) under ``fence``: what it writes through ``current_fence()`` is fenced."""
    token = _CURRENT.set(fence)
    try:
        yield fence
    finally:
        _CURRENT.reset(token)
