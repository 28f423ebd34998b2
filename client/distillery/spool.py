"""The local disk spool: every recorded trajectory is on disk before any network call, and leaves it only
once the server has acknowledged it.

One JSON file per trajectory, ``<key>.json`` (``key`` hashes source and external_id), rewritten
atomically (temporary file, fsync, rename, fsync of the directory) after every step:
``{"state": "open" | "done", "body": <POST /v1/trajectories body>, "idempotency_key", ...}``.
A process working on a record holds an advisory lock on ``<key>.lock`` (the OS drops it when the
process dies, even by SIGKILL), so a replay never touches a record that is still being written or
delivered, and always finds the ones whose writer is gone.

Settling a delivery: 2xx removes the record; an answer that can never succeed (400, 413, 422, a 409
``external_id_conflict``: the server holds other content under that id) moves it to ``rejected/``
with the problem body, so it is never retried nor silently dropped; anything else (server down,
429, 5xx, auth) keeps it for the next replay.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from distillery.wire import DistilleryError

PERMANENT_STATUSES = frozenset({400, 413, 422})
PERMANENT_CONFLICTS = frozenset({"external_id_conflict", "idempotency_key_reused"})
UNFINISHED_TAG = "unfinished"
STALE_TEMP_SECONDS = 600.0


def default_root() -> Path:
    """``$DISTILLERY_SPOOL_DIR``, else the user's cache directory (``…/distillery/spool``)."""
    if os.environ.get("DISTILLERY_SPOOL_DIR"):
        return Path(os.environ["DISTILLERY_SPOOL_DIR"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "distillery" / "spool"


def directory_for(base_url: str) -> Path:
    """The default spool of one server: records are never replayed to another server."""
    return default_root() / hashlib.sha256(base_url.encode()).hexdigest()[:16]


def record_key(source: str, external_id: str) -> str:
    return hashlib.sha256(f"{source}\0{external_id}".encode()).hexdigest()[:32]


def is_permanent(exc: BaseException) -> bool:
    """Whether a failed delivery can never succeed as it is (then the record is rejected, not retried)."""
    if not isinstance(exc, DistilleryError):
        return False
    return exc.status in PERMANENT_STATUSES or (exc.status == 409 and exc.code in PERMANENT_CONFLICTS)


def is_acknowledged(status: int) -> bool:
    return 200 <= status < 300


class Lock:
    """An advisory, non-blocking lock on a file; released by the OS when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None

    def acquire(self) -> bool:
        fh = self.path.open("a+b")
        try:
            _lock(fh)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self, delete: bool = False) -> None:
        if self._fh is None:
            return
        if delete:  # before unlocking: no other process can hold it now
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            _unlock(self._fh)
        self._fh.close()
        self._fh = None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fh: BinaryIO) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(fh: BinaryIO) -> None:
        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fh: BinaryIO) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fh: BinaryIO) -> None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass
class Claimed:
    """A record this process now holds: ``body`` and ``idempotency_key`` are what to POST."""

    key: str
    record: dict[str, Any]
    lock: Lock

    @property
    def body(self) -> dict[str, Any]:
        return self.record["body"]  # type: ignore[no-any-return]


@dataclass
class ReplayReport:
    """What one replay did: ids stored (or already stored), records rejected, and records kept for later."""

    stored: list[str]
    rejected: list[str]
    kept: int

    def __bool__(self) -> bool:
        return bool(self.stored or self.rejected or self.kept)


class Spool:
    """A spool directory (created on first write)."""

    def __init__(self, directory: str | Path, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.fsync = fsync

    @property
    def rejected_dir(self) -> Path:
        return self.directory / "rejected"

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def lock(self, key: str) -> Lock:
        self.directory.mkdir(parents=True, exist_ok=True)
        return Lock(self.directory / f"{key}.lock")

    def write(self, key: str, record: dict[str, Any]) -> None:
        """Replace ``key``'s record atomically: a reader (or a crash) sees the old record or the new one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps({**record, "written_at": dt.datetime.now(dt.UTC).isoformat(), "pid": os.getpid()},
                          ensure_ascii=False).encode("utf-8")
        temp = self.directory / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        with temp.open("wb") as fh:
            fh.write(data)
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(temp, self.path(key))
        if self.fsync:
            self._sync_directory()

    def _sync_directory(self) -> None:
        if sys.platform == "win32":  # pragma: no cover - directories cannot be opened there
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def keys(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def __len__(self) -> int:
        return len(self.keys())

    def claim(self, keys: list[str] | None = None) -> Iterator[Claimed]:
        """The records (of ``keys``, default all) that no live process holds, locked for the caller; an
        unfinished one (its writer died mid-way) is first finalized in place (``finalize_unfinished``)."""
        self._remove_stale_temps()
        for key in self.keys() if keys is None else keys:
            lock = self.lock(key)
            if not lock.acquire():
                continue  # a live process is writing or delivering it
            record = self.read(key)
            if record is None:  # delivered meanwhile
                lock.release(delete=True)
                continue
            if record.get("state") != "done":
                record = finalize_unfinished(record)
                self.write(key, record)
            yield Claimed(key, record, lock)

    def settle(self, claimed: Claimed, status: int | None = None, error: BaseException | None = None) -> str:
        """Apply a delivery's outcome and release the record: "stored", "rejected" or "kept"."""
        try:
            if status is not None and is_acknowledged(status):
                with contextlib.suppress(FileNotFoundError):
                    self.path(claimed.key).unlink()
                return "stored"
            if error is not None and is_permanent(error):
                self._reject(claimed, error)
                return "rejected"
            return "kept"
        finally:
            claimed.lock.release(delete=True)

    def _reject(self, claimed: Claimed, error: BaseException) -> None:
        problem = error.problem if isinstance(error, DistilleryError) else {"detail": str(error)}
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        entry = {**claimed.record, "error": problem, "rejected_at": dt.datetime.now(dt.UTC).isoformat()}
        (self.rejected_dir / f"{claimed.key}.json").write_text(json.dumps(entry, ensure_ascii=False),
                                                                 encoding="utf-8")
        with contextlib.suppress(FileNotFoundError):
            self.path(claimed.key).unlink()

    def rejected(self) -> list[dict[str, Any]]:
        """The rejected records with their ``error`` (problem body), oldest first."""
        if not self.rejected_dir.is_dir():
            return []
        paths = sorted(self.rejected_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        return [json.loads(p.read_text(encoding="utf-8")) for p in paths]

    def _remove_stale_temps(self) -> None:
        if not self.directory.is_dir():
            return
        for temp in self.directory.glob(".*.tmp"):  # a write interrupted before its rename
            with contextlib.suppress(OSError):
                if time.time() - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                    temp.unlink()


def finalize_unfinished(record: dict[str, Any]) -> dict[str, Any]:
    """What a trajectory whose process died mid-way becomes: the steps recorded so far, outcome
    "unknown", tagged ``unfinished`` and marked ``metadata.distillery.unfinished`` (so reviewers and
    dataset filters can leave it out). Deterministic: replaying it twice posts the same body."""
    body = dict(record["body"])
    body["outcome"] = "unknown"
    body.pop("reward", None)
    tags = list(body.get("tags") or [])
    body["tags"] = tags if UNFINISHED_TAG in tags else [*tags, UNFINISHED_TAG]
    metadata = dict(body.get("metadata") or {})
    metadata["distillery"] = {**metadata.get("distillery", {}), "unfinished": True,
                              "last_step_at": record.get("written_at")}
    body["metadata"] = metadata
    return {**record, "state": "done", "body": body}
