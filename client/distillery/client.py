"""The synchronous client, ``Distillery`` (also importable as ``DistilleryClient``, its former name).

    from distillery import Distillery

    with Distillery("http://127.0.0.1:8000", key="dk_…") as api:
        with api.trajectory(task="2+2?", source="my-agent") as t:   # recorded, spooled, posted on exit
            t.final("4")
        api.submit(trajectory)                                    # background batches; api.flush() waits
        api.review_bulk("approve", {"source": "my-agent"})
        ds = api.create_dataset("v1", filter={"source": "my-agent"}, eval_fraction=0.1)
        job = api.submit_job({"kind": "distill", "dataset_id": ds["id"], "student_model": "tiny"})
        for event in api.stream_events(job["id"]):                # Server-Sent Events until the job ends
            print(event.event, event.data)

Every call is retried per ``Retry`` (see ``distillery.transport``); every non-2xx answer raises
``DistilleryError`` carrying the problem+json body. ``stream_events`` reconnects after a dropped
connection with ``Last-Event-ID``, so no event is lost or repeated.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from distillery import api
from distillery.base import DEFAULT_URL, ClientBase, SpoolOption, as_batch_answer, splits_batch
from distillery.batching import Batcher, Batching, Failure
from distillery.recorder import Trajectory
from distillery.spool import Claimed, ReplayReport
from distillery.transport import Call, Retry, SyncTransport
from distillery.wire import DistilleryError, Event, SSEParser, parse_sse

log = logging.getLogger("distillery")

_parse_sse = parse_sse  # the name tests and older callers import
TERMINAL = api.TERMINAL


class Distillery(ClientBase):
    """The blocking client. Thread-safe; close it (or use ``with``) so queued trajectories are sent."""

    def __init__(self, base_url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, retry: Retry | None = None,
                 batching: Batching | None = None, spool: SpoolOption = True, replay: bool = True) -> None:
        super().__init__(base_url, key, retry=retry, batching=batching, spool=spool, replay=replay)
        self.http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport)
        self.transport = SyncTransport(self.http, self.retry)
        self.batcher = Batcher(self._post_batch, self.batching)
        self._replayer: threading.Thread | None = None
        if self.replay_on_start:
            self._replayer = threading.Thread(target=self._replay_in_background, name="distillery-replay",
                                              daemon=True)
            self._replayer.start()

    def close(self) -> None:
        """Send what is queued, wait for the start-up replay, and close the connection pool."""
        try:
            self.batcher.close()
            self._wait_replayed()
        finally:
            self.http.close()

    def __enter__(self) -> Distillery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, call: Call) -> Any:
        return self.transport.send(call).json()

    # -- trajectories: single, batched, recorded -------------------------------------------------------------

    def ingest(self, trajectory: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/trajectories: the receipt ({id, created, ...})."""
        return self._json(api.ingest(trajectory, idempotency_key))  # type: ignore[no-any-return]

    def ingest_batch(self, items: list[dict[str, Any]], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/trajectories/batch: one result per item ({created, replayed, failed, items})."""
        return self._json(api.ingest_batch(items, idempotency_key))  # type: ignore[no-any-return]

    def submit(self, trajectory: dict[str, Any]) -> concurrent.futures.Future[dict[str, Any]]:
        """Queue one trajectory for the background batcher; the future holds its per-item answer."""
        return self.batcher.submit(trajectory)

    def flush(self, timeout: float | None = None) -> list[Failure]:
        """Send every queued trajectory and wait for the answers (and for the start-up replay); the
        submitted items that failed since the last flush."""
        failures = self.batcher.flush(timeout)
        self._wait_replayed(timeout)
        return failures

    def _post_batch(self, encoded: list[bytes]) -> dict[str, Any]:
        return self._json(api.ingest_encoded(encoded))  # type: ignore[no-any-return]

    def deliver(self, t: Trajectory) -> None:
        """Post a finished recorder (called by its ``__exit__``)."""
        claim = t.claim
        try:
            if t.background:
                future = self.batcher.submit(t.body())
                t.status = "queued"
                future.add_done_callback(lambda f: self._settle(t, claim, None if f.exception() else f.result(),
                                                                f.exception()))
                return
            receipt = self.ingest(t.body(), idempotency_key=t.idempotency_key)
        except BaseException as exc:  # delivery never raises out of the recorder's block; an interrupt does
            self._settle(t, claim, None, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self._settle(t, claim, receipt, None)

    def replay_spool(self) -> ReplayReport:
        """Post what the spool holds (finished trajectories as recorded; those whose process died mid-way
        as ``unfinished``, see ``distillery.spool``); stops at the first batch the server cannot take."""
        report = ReplayReport([], [], 0)
        if self.spool is None:
            return report
        for chunk in self._replay_chunks():
            claimed = list(self.spool.claim(chunk))
            if not claimed:
                continue
            answer, error = self._replay_batch(claimed)
            self._settle_replayed(claimed, answer, error, report)
            if error is not None:
                break
        return report

    def _replay_batch(self, claimed: list[Claimed]) -> tuple[dict[str, Any] | None, Exception | None]:
        try:
            return self.ingest_batch([c.body for c in claimed]), None
        except Exception as exc:
            if not splits_batch(exc, len(claimed)):
                return None, exc
        results: list[tuple[int, dict[str, Any]]] = []
        for c in claimed:
            try:
                results.append((201, self.ingest(c.body, idempotency_key=c.record.get("idempotency_key"))))
            except DistilleryError as exc:
                results.append((exc.status, exc.problem))
        return as_batch_answer(results), None

    def _replay_in_background(self) -> None:
        try:
            report = self.replay_spool()
        except Exception:
            log.exception("distillery: replaying the spool failed")
            return
        if report:
            log.info("distillery: replayed the spool: %d stored, %d rejected, %d kept", len(report.stored),
                     len(report.rejected), report.kept)

    def _wait_replayed(self, timeout: float | None = None) -> None:
        if self._replayer is not None:
            self._replayer.join(timeout)

    # -- review and datasets -------------------------------------------------------------------------------

    def review_bulk(self, action: str, filter: dict[str, Any], **options: Any) -> dict[str, Any]:
        """POST /v1/trajectories/review/bulk: approve or reject every pending trajectory matching ``filter``."""
        return self._json(api.review_bulk(action, filter, options))  # type: ignore[no-any-return]

    def create_dataset(self, name: str, filter: dict[str, Any] | None = None, *, idempotency_key: str | None = None,
                       **options: Any) -> dict[str, Any]:
        """POST /v1/datasets: freeze a snapshot (options: eval_fraction, seed, statuses, dedupe, …)."""
        return self._json(api.create_dataset(name, filter, options, idempotency_key))  # type: ignore[no-any-return]

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json(api.get_dataset(dataset_id))  # type: ignore[no-any-return]

    def export_dataset(self, dataset_id: str, *, format: str = "jsonl", split: str = "all"
                       ) -> Iterator[dict[str, Any]]:
        """GET /v1/datasets/{id}/export, streamed: one record per line."""
        with self.transport.stream(api.export_dataset(dataset_id, format, split)) as response:
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    # -- jobs ----------------------------------------------------------------------------------------------

    def submit_job(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/jobs: {kind, dataset_id, <config fields>, priority, max_attempts} → the queued job."""
        return self._json(api.submit_job(spec, idempotency_key))  # type: ignore[no-any-return]

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._json(api.get_job(job_id))  # type: ignore[no-any-return]

    def list_jobs(self, *, status: str | None = None, kind: str | None = None, dataset_id: str | None = None,
                  limit: int = 100, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Newest first, following cursors until ``limit`` jobs were yielded."""
        cursor, seen = None, 0
        while seen < limit:
            page = self._json(api.list_jobs_page(status, kind, dataset_id, cursor, min(page_size, limit - seen)))
            for item in page["items"]:
                yield item
                seen += 1
            cursor = page["next_cursor"]
            if not cursor:
                return

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json(api.cancel_job(job_id))  # type: ignore[no-any-return]

    def retry_job(self, job_id: str) -> dict[str, Any]:
        return self._json(api.retry_job(job_id))  # type: ignore[no-any-return]

    def job_events(self, job_id: str, *, cursor: str | int | None = None, limit: int = 100,
                   kind: list[str] | None = None) -> dict[str, Any]:
        """GET /v1/jobs/{id}/events: {items, next_cursor}."""
        return self._json(api.job_events(job_id, cursor, limit, kind))  # type: ignore[no-any-return]

    def job_metrics(self, job_id: str, *, after_step: int = 0, limit: int = 1000) -> dict[str, Any]:
        """GET /v1/jobs/{id}/metrics: per-step rows with step > after_step."""
        return self._json(api.job_metrics(job_id, after_step, limit))  # type: ignore[no-any-return]

    def lineage(self, job_id: str) -> dict[str, Any]:
        return self._json(api.lineage(job_id))  # type: ignore[no-any-return]

    def workers(self, *, alive: bool | None = None) -> list[dict[str, Any]]:
        return self._json(api.workers(alive))["items"]  # type: ignore[no-any-return]

    def stream_events(self, job_id: str, *, last_event_id: int | None = None, reconnect: bool = True,
                      max_reconnects: int = 20) -> Iterator[Event]:
        """The job's events as they happen (SSE); ends after the ``end`` event, which carries the final status."""
        failures = 0
        timeout = httpx.Timeout(self.http.timeout.connect, read=60.0)
        while True:
            try:
                with self.transport.stream(api.event_stream(job_id, last_event_id), timeout) as response:
                    parser = SSEParser()
                    for line in response.iter_lines():
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
                time.sleep(min(2.0, 0.2 * failures))
                continue
            if not reconnect:
                return

    def wait_for_job(self, job_id: str, *, timeout: float | None = None, poll: float = 1.0) -> dict[str, Any]:
        """Poll until the job is succeeded, failed or cancelled; the final job (TimeoutError past ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']}")
            time.sleep(poll)

    # -- artifacts -----------------------------------------------------------------------------------------

    def list_artifacts(self, job_id: str, *, prefix: str | None = None, sha256: bool = False) -> list[dict[str, Any]]:
        return self._json(api.list_artifacts(job_id, prefix, sha256))["items"]  # type: ignore[no-any-return]

    def read_artifact(self, job_id: str, path: str) -> bytes:
        return self.transport.send(api.artifact(job_id, path)).content

    def download_artifact(self, job_id: str, path: str, dest: str | Path) -> Path:
        """Stream one artifact to ``dest`` (a file path; written atomically)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        with self.transport.stream(api.artifact(job_id, path)) as response, partial.open("wb") as fh:
            for chunk in response.iter_bytes(1 << 20):
                fh.write(chunk)
        partial.replace(dest)
        return dest

    def download_artifacts(self, job_id: str, dest_dir: str | Path, *, prefix: str | None = None) -> list[Path]:
        """Every artifact (or those under ``prefix``, e.g. "final") into ``dest_dir``, keeping relative paths."""
        dest_dir = Path(dest_dir).resolve()
        paths = []
        for item in self.list_artifacts(job_id, prefix=prefix):
            target = (dest_dir / item["path"]).resolve()
            if not target.is_relative_to(dest_dir):  # never trust a server-given path
                raise ValueError(f"refusing artifact path {item['path']!r}")
            paths.append(self.download_artifact(job_id, item["path"], target))
        return paths


DistilleryClient = Distillery

__all__ = ["DEFAULT_URL", "Distillery", "DistilleryClient", "DistilleryError", "Event"]
