"""The asyncio client, ``AsyncDistillery``: the calls of ``Distillery``, awaited.

    async with AsyncDistillery("http://127.0.0.1:8000", key="dk_…") as api:
        async with api.trajectory(task="2+2?", source="my-agent") as t:
            t.final("4")
        await api.submit(trajectory)          # a future; ``await api.flush()`` waits for every answer
        job = await api.submit_job(spec)
        async for event in api.stream_events(job["id"]):
            ...

Recorder steps (``t.thought`` …) stay plain calls: they write the spool file synchronously, which is
what keeps a step safe from a crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from distillery import api
from distillery.base import ClientBase, SpoolOption, as_batch_answer, splits_batch
from distillery.batching import AsyncBatcher, Batching, Failure
from distillery.recorder import Trajectory
from distillery.spool import Claimed, ReplayReport
from distillery.transport import AsyncTransport, Call, Retry
from distillery.wire import DistilleryError, Event, SSEParser

log = logging.getLogger("distillery")


class AsyncDistillery(ClientBase):
    """The asyncio client. Close it (``await api.aclose()`` or ``async with``) so queued trajectories are sent."""

    def __init__(self, base_url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, retry: Retry | None = None,
                 batching: Batching | None = None, spool: SpoolOption = True, replay: bool = True) -> None:
        super().__init__(base_url, key, retry=retry, batching=batching, spool=spool, replay=replay)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                      transport=transport)
        self.transport = AsyncTransport(self.http, self.retry)
        self.batcher = AsyncBatcher(self._post_batch, self.batching)
        self._replayer: asyncio.Task[ReplayReport] | None = None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # started by __aenter__ (or the first submit) once a loop runs
        self._start_replay()

    def _start_replay(self) -> None:
        if self.replay_on_start and self._replayer is None:
            self._replayer = asyncio.get_running_loop().create_task(self.replay_spool(), name="distillery-replay")

    async def aclose(self) -> None:
        try:
            await self.batcher.close()
            await self._wait_replayed()
        finally:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncDistillery:
        self._start_replay()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _json(self, call: Call) -> Any:
        return (await self.transport.send(call)).json()

    # -- trajectories -------------------------------------------------------------------------------------

    async def ingest(self, trajectory: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        return await self._json(api.ingest(trajectory, idempotency_key))  # type: ignore[no-any-return]

    async def ingest_batch(self, items: list[dict[str, Any]], *, idempotency_key: str | None = None
                           ) -> dict[str, Any]:
        return await self._json(api.ingest_batch(items, idempotency_key))  # type: ignore[no-any-return]

    async def submit(self, trajectory: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Queue one trajectory (waits while the queue is full, or raises QueueFull); a future of its answer."""
        self._start_replay()
        return await self.batcher.submit(trajectory)

    async def flush(self) -> list[Failure]:
        failures = await self.batcher.flush()
        await self._wait_replayed()
        return failures

    async def _post_batch(self, encoded: list[bytes]) -> dict[str, Any]:
        return await self._json(api.ingest_encoded(encoded))  # type: ignore[no-any-return]

    async def adeliver(self, t: Trajectory) -> None:
        """Post a finished recorder (called by its ``__aexit__``)."""
        claim = t.claim
        self._start_replay()
        try:
            if t.background:
                future = await self.batcher.submit(t.body())
                t.status = "queued"
                future.add_done_callback(lambda f: self._settle(t, claim, None if f.exception() else f.result(),
                                                                f.exception()))
                return
            receipt = await self.ingest(t.body(), idempotency_key=t.idempotency_key)
        except BaseException as exc:  # cancellation too releases the record; it then propagates
            self._settle(t, claim, None, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._settle(t, claim, receipt, None)

    async def replay_spool(self) -> ReplayReport:
        """See ``Distillery.replay_spool``."""
        report = ReplayReport([], [], 0)
        if self.spool is None:
            return report
        for chunk in self._replay_chunks():
            claimed = list(self.spool.claim(chunk))
            if not claimed:
                continue
            answer, error = await self._replay_batch(claimed)
            self._settle_replayed(claimed, answer, error, report)
            if error is not None:
                break
        return report

    async def _replay_batch(self, claimed: list[Claimed]) -> tuple[dict[str, Any] | None, Exception | None]:
        try:
            return await self.ingest_batch([c.body for c in claimed]), None
        except Exception as exc:
            if not splits_batch(exc, len(claimed)):
                return None, exc
        results: list[tuple[int, dict[str, Any]]] = []
        for c in claimed:
            try:
                results.append((201, await self.ingest(c.body, idempotency_key=c.record.get("idempotency_key"))))
            except DistilleryError as exc:
                results.append((exc.status, exc.problem))
        return as_batch_answer(results), None

    async def _wait_replayed(self) -> None:
        if self._replayer is not None:
            try:
                await self._replayer
            except Exception:
                log.exception("distillery: replaying the spool failed")

    # -- review, datasets, jobs ------------------------------------------------------------------------------

    async def review_bulk(self, action: str, filter: dict[str, Any], **options: Any) -> dict[str, Any]:
        return await self._json(api.review_bulk(action, filter, options))  # type: ignore[no-any-return]

    async def create_dataset(self, name: str, filter: dict[str, Any] | None = None, *,
                             idempotency_key: str | None = None, **options: Any) -> dict[str, Any]:
        return await self._json(api.create_dataset(name, filter, options, idempotency_key))  # type: ignore[no-any-return]

    async def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return await self._json(api.get_dataset(dataset_id))  # type: ignore[no-any-return]

    async def export_dataset(self, dataset_id: str, *, format: str = "jsonl", split: str = "all"
                             ) -> AsyncIterator[dict[str, Any]]:
        async with self.transport.stream(api.export_dataset(dataset_id, format, split)) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)

    async def submit_job(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        return await self._json(api.submit_job(spec, idempotency_key))  # type: ignore[no-any-return]

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self._json(api.get_job(job_id))  # type: ignore[no-any-return]

    async def list_jobs(self, *, status: str | None = None, kind: str | None = None, dataset_id: str | None = None,
                        limit: int = 100, page_size: int = 100) -> AsyncIterator[dict[str, Any]]:
        cursor, seen = None, 0
        while seen < limit:
            page = await self._json(api.list_jobs_page(status, kind, dataset_id, cursor,
                                                       min(page_size, limit - seen)))
            for item in page["items"]:
                yield item
                seen += 1
            cursor = page["next_cursor"]
            if not cursor:
                return

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        return await self._json(api.cancel_job(job_id))  # type: ignore[no-any-return]

    async def retry_job(self, job_id: str) -> dict[str, Any]:
        return await self._json(api.retry_job(job_id))  # type: ignore[no-any-return]

    async def job_events(self, job_id: str, *, cursor: str | int | None = None, limit: int = 100,
                         kind: list[str] | None = None) -> dict[str, Any]:
        return await self._json(api.job_events(job_id, cursor, limit, kind))  # type: ignore[no-any-return]

    async def job_metrics(self, job_id: str, *, after_step: int = 0, limit: int = 1000) -> dict[str, Any]:
        return await self._json(api.job_metrics(job_id, after_step, limit))  # type: ignore[no-any-return]

    async def lineage(self, job_id: str) -> dict[str, Any]:
        return await self._json(api.lineage(job_id))  # type: ignore[no-any-return]

    async def workers(self, *, alive: bool | None = None) -> list[dict[str, Any]]:
        return (await self._json(api.workers(alive)))["items"]  # type: ignore[no-any-return]

    async def stream_events(self, job_id: str, *, last_event_id: int | None = None, reconnect: bool = True,
                            max_reconnects: int = 20) -> AsyncIterator[Event]:
        """See ``Distillery.stream_events``."""
        failures = 0
        timeout = httpx.Timeout(self.http.timeout.connect, read=60.0)
        while True:
            try:
                async with self.transport.stream(api.event_stream(job_id, last_event_id), timeout) as response:
                    parser = SSEParser()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError:
                failures += 1
                if not reconnect or failures > max_reconnects:
                    raise
                await asyncio.sleep(min(2.0, 0.2 * failures))
                continue
            if not reconnect:
                return

    async def wait_for_job(self, job_id: str, *, timeout: float | None = None, poll: float = 1.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            job = await self.get_job(job_id)
            if job["status"] in api.TERMINAL:
                return job
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']}")
            await asyncio.sleep(poll)

    # -- artifacts -----------------------------------------------------------------------------------------

    async def list_artifacts(self, job_id: str, *, prefix: str | None = None, sha256: bool = False
                             ) -> list[dict[str, Any]]:
        return (await self._json(api.list_artifacts(job_id, prefix, sha256)))["items"]  # type: ignore[no-any-return]

    async def read_artifact(self, job_id: str, path: str) -> bytes:
        return (await self.transport.send(api.artifact(job_id, path))).content

    async def download_artifact(self, job_id: str, path: str, dest: str | Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        async with self.transport.stream(api.artifact(job_id, path)) as response:
            with partial.open("wb") as fh:
                async for chunk in response.aiter_bytes(1 << 20):
                    fh.write(chunk)
        partial.replace(dest)
        return dest

    async def download_artifacts(self, job_id: str, dest_dir: str | Path, *, prefix: str | None = None
                                 ) -> list[Path]:
        dest_dir = Path(dest_dir).resolve()
        paths = []
        for item in await self.list_artifacts(job_id, prefix=prefix):
            target = (dest_dir / item["path"]).resolve()
            if not target.is_relative_to(dest_dir):
                raise ValueError(f"refusing artifact path {item['path']!r}")
            paths.append(await self.download_artifact(job_id, item["path"], target))
        return paths
