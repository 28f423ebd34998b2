"""Background batching: ``submit`` puts a trajectory on a bounded queue; a background worker (a thread,
or an asyncio task for ``AsyncDistillery``) posts them to ``/v1/trajectories/batch`` when ``batch_size``
items are waiting or the oldest has waited ``max_delay`` seconds.

Each ``submit`` returns a future: its result is the item's answer (``{index, status, id, created}``), or
it raises the item's ``DistilleryError`` (the per-item problem) or the error that sank its whole batch.
Failures are also logged and returned by the next ``flush()``: none is dropped silently. A full queue
blocks ``submit`` (``on_full="block"``) or raises ``QueueFull`` (``on_full="raise"``). ``flush()``
sends what is queued and waits for every answer; ``close()`` flushes and stops the worker.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import queue
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from distillery.wire import DistilleryError, dumps

log = logging.getLogger("distillery")

OnFull = Literal["block", "raise"]
Post = Callable[[list[bytes]], dict[str, Any]]
AsyncPost = Callable[[list[bytes]], Awaitable[dict[str, Any]]]


class QueueFull(Exception):
    """The batch queue is full and the client was built with ``on_full="raise"``."""


@dataclass(frozen=True)
class Batching:
    """Options of the background batcher."""

    batch_size: int = 100  # items per POST (the server takes up to 1000)
    max_delay: float = 1.0  # seconds the oldest queued item may wait before its batch is sent
    max_queue: int = 10_000  # items waiting at most
    max_batch_bytes: int = 8 << 20  # a batch is sent before it grows past this (the server's limit is 64 MiB)
    on_full: OnFull = "block"


@dataclass(frozen=True)
class Failure:
    """A submitted item that was not stored, and why."""

    item: dict[str, Any]
    error: BaseException


@dataclass
class _Item:
    item: dict[str, Any]
    encoded: bytes
    future: Any  # concurrent.futures.Future or asyncio.Future
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class _Flush:
    done: Any  # threading.Event or asyncio.Event


_STOP = object()


class _Settler:
    """Turning a batch answer into per-item results, shared by both workers."""

    def __init__(self) -> None:
        self.failures: list[Failure] = []

    def fail(self, item: _Item, error: BaseException) -> None:
        if item.future.done():
            return
        log.warning("distillery: trajectory %r was not stored: %s", item.item.get("external_id"), error)
        self.failures.append(Failure(item.item, error))
        item.future.set_exception(error)

    def settle(self, batch: list[_Item], answer: dict[str, Any] | None, error: BaseException | None) -> None:
        if error is not None:
            for item in batch:
                self.fail(item, error)
            return
        assert answer is not None
        for item, result in zip(batch, answer["items"], strict=True):
            if 200 <= result["status"] < 300:
                if not item.future.done():
                    item.future.set_result(result)
            else:
                self.fail(item, DistilleryError(result["status"], result.get("error") or {}))

    def take_failures(self) -> list[Failure]:
        out, self.failures = self.failures, []
        return out


def _encode(item: dict[str, Any]) -> bytes:
    return dumps(item)  # here, in the caller's thread: an unencodable item fails where it was made


def _full(batch: list[_Item], options: Batching, nbytes: int) -> bool:
    return len(batch) >= options.batch_size or nbytes >= options.max_batch_bytes


class Batcher:
    """The thread-backed batcher of ``Distillery``."""

    def __init__(self, post: Post, options: Batching) -> None:
        self.post = post
        self.options = options
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, options.max_queue))
        self.settler = _Settler()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()
        self.closed = False

    def submit(self, item: dict[str, Any]) -> concurrent.futures.Future[dict[str, Any]]:
        if self.closed:
            raise RuntimeError("the client is closed")
        entry = _Item(item, _encode(item), concurrent.futures.Future())
        self._start()
        try:
            self.queue.put(entry, block=self.options.on_full == "block")
        except queue.Full:
            raise QueueFull(f"{self.options.max_queue} trajectories are already waiting") from None
        return entry.future  # type: ignore[no-any-return]

    def _start(self) -> None:
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="distillery-batcher", daemon=True)
                self.thread.start()
                atexit.register(_close_at_exit, weakref.ref(self))

    def flush(self, timeout: float | None = None) -> list[Failure]:
        """Send everything queued, wait for the answers; the failures since the last flush."""
        if self.thread is not None and self.thread.is_alive():
            marker = _Flush(threading.Event())
            self.queue.put(marker)
            if not marker.done.wait(timeout):
                raise TimeoutError("the batch queue did not drain in time")
        return self.settler.take_failures()

    def close(self, timeout: float | None = None) -> list[Failure]:
        failures = self.flush(timeout)
        self.closed = True
        if self.thread is not None and self.thread.is_alive():
            self.queue.put(_STOP)
            self.thread.join(timeout)
        return failures

    def _send(self, batch: list[_Item]) -> None:
        if not batch:
            return
        try:
            self.settler.settle(batch, self.post([i.encoded for i in batch]), None)
        except Exception as exc:  # what is still unsettled shares the failure
            self.settler.settle(batch, None, exc)

    def _run(self) -> None:
        batch: list[_Item] = []
        nbytes = 0
        while True:
            timeout = None if not batch else max(0.0, batch[0].queued_at + self.options.max_delay - time.monotonic())
            try:
                entry = self.queue.get(timeout=timeout)
            except queue.Empty:  # the oldest item is old enough
                self._send(batch)
                batch, nbytes = [], 0
                continue
            if isinstance(entry, _Item):
                batch.append(entry)
                nbytes += len(entry.encoded)
                if _full(batch, self.options, nbytes):
                    self._send(batch)
                    batch, nbytes = [], 0
                continue
            self._send(batch)
            batch, nbytes = [], 0
            if isinstance(entry, _Flush):
                entry.done.set()
            if entry is _STOP:
                return


def _close_at_exit(ref: weakref.ref[Batcher]) -> None:
    batcher = ref()
    if batcher is not None and not batcher.closed:
        for failure in batcher.close(timeout=30):
            log.error("distillery: at exit, trajectory %r was not stored: %s", failure.item.get("external_id"),
                      failure.error)


class AsyncBatcher:
    """The asyncio batcher of ``AsyncDistillery``: the same rules, a task instead of a thread."""

    def __init__(self, post: AsyncPost, options: Batching) -> None:
        self.post = post
        self.options = options
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, options.max_queue))
        self.settler = _Settler()
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    async def submit(self, item: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        if self.closed:
            raise RuntimeError("the client is closed")
        entry = _Item(item, _encode(item), asyncio.get_running_loop().create_future())
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run(), name="distillery-batcher")
        if self.options.on_full == "block":
            await self.queue.put(entry)
        else:
            try:
                self.queue.put_nowait(entry)
            except asyncio.QueueFull:
                raise QueueFull(f"{self.options.max_queue} trajectories are already waiting") from None
        return entry.future  # type: ignore[no-any-return]

    async def flush(self) -> list[Failure]:
        if self.task is not None and not self.task.done():
            marker = _Flush(asyncio.Event())
            await self.queue.put(marker)
            await marker.done.wait()
        return self.settler.take_failures()

    async def close(self) -> list[Failure]:
        failures = await self.flush()
        self.closed = True
        if self.task is not None and not self.task.done():
            await self.queue.put(_STOP)
            await self.task
        return failures

    async def _send(self, batch: list[_Item]) -> None:
        if not batch:
            return
        try:
            self.settler.settle(batch, await self.post([i.encoded for i in batch]), None)
        except Exception as exc:
            self.settler.settle(batch, None, exc)

    async def _run(self) -> None:
        batch: list[_Item] = []
        nbytes = 0
        while True:
            timeout = None if not batch else max(0.0, batch[0].queued_at + self.options.max_delay - time.monotonic())
            try:
                entry = await asyncio.wait_for(self.queue.get(), timeout)
            except TimeoutError:
                await self._send(batch)
                batch, nbytes = [], 0
                continue
            if isinstance(entry, _Item):
                batch.append(entry)
                nbytes += len(entry.encoded)
                if _full(batch, self.options, nbytes):
                    await self._send(batch)
                    batch, nbytes = [], 0
                continue
            await self._send(batch)
            batch, nbytes = [], 0
            if isinstance(entry, _Flush):
                entry.done.set()
            if entry is _STOP:
                return
