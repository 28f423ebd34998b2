"""The Distillery Python client: a small synchronous wrapper over the HTTP API (httpx).

    from distillery import DistilleryClient

    with DistilleryClient("http://127.0.0.1:8000", key="dk_…") as api:
        api.ingest_batch(trajectories)                        # POST /v1/trajectories/batch
        api.review_bulk("approve", {"source": "my-agent"})    # POST /v1/trajectories/review/bulk
        ds = api.create_dataset("v1", filter={"source": "my-agent"}, eval_fraction=0.1)
        job = api.submit_job({"kind": "distill", "dataset_id": ds["id"], "student_model": "Qwen/Qwen2.5-0.5B-Instruct",
                              "training": {"max_steps": 200}})
        for event in api.stream_events(job["id"]):            # Server-Sent Events until the job ends
            print(event.event, event.data)
        api.download_artifacts(job["id"], "out/", prefix="final")

``base_url`` defaults to ``$DISTILLERY_API_URL`` (else ``http://127.0.0.1:8000``) and ``key`` to
``$DISTILLERY_API_KEY``. Every non-2xx answer raises ``DistilleryError`` carrying the problem+json body
(``status``, ``code``, ``detail``, per-field ``errors``). ``stream_events`` reconnects after a dropped
connection with ``Last-Event-ID``, so no event is lost or repeated. Torch-free; only httpx.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json as jsonlib
import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "cancelled")


class DistilleryError(Exception):
    """A non-2xx answer; ``problem`` is the RFC 9457 body (or {"detail": text} for a non-JSON one)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code", f"http_{status}"))
        self.detail: str = str(problem.get("detail", ""))
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        super().__init__(f"{status} {self.code}: {self.detail}")


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: ``event`` is the kind (state, progress, log, metric, or end)."""

    id: int | None
    event: str
    data: dict[str, Any]


class DistilleryClient:
    def __init__(self, base_url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = (base_url or os.environ.get("DISTILLERY_API_URL") or DEFAULT_URL).rstrip("/")
        key = key or os.environ.get("DISTILLERY_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DistilleryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------------------

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text[:2000]}
        raise DistilleryError(response.status_code, problem if isinstance(problem, dict) else {"detail": problem})

    def _json(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        content = _dumps(json) if json is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})} if content is not None else headers
        return self._check(self.http.request(method, path, content=content, params=params, headers=hdrs)).json()

    @staticmethod
    def _idem(key: str | None) -> dict[str, str] | None:
        return {"Idempotency-Key": key} if key else None

    # -- trajectories and review ---------------------------------------------------------------------------

    def ingest(self, trajectory: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/trajectories: the receipt ({id, created, ...})."""
        return self._json("POST", "/v1/trajectories", json=trajectory, headers=self._idem(idempotency_key))

    def ingest_batch(self, items: list[dict[str, Any]], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/trajectories/batch: one result per item ({created, replayed, failed, items})."""
        return self._json("POST", "/v1/trajectories/batch", json={"items": items},
                          headers=self._idem(idempotency_key))

    def review_bulk(self, action: str, filter: dict[str, Any], **options: Any) -> dict[str, Any]:
        """POST /v1/trajectories/review/bulk: approve or reject every pending trajectory matching ``filter``."""
        return self._json("POST", "/v1/trajectories/review/bulk", json={"action": action, "filter": filter, **options})

    # -- datasets ------------------------------------------------------------------------------------------

    def create_dataset(self, name: str, filter: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """POST /v1/datasets: freeze a snapshot (options: eval_fraction, seed, statuses, dedupe, …)."""
        return self._json("POST", "/v1/datasets", json={"name": name, "filter": filter or {}, **options})

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def export_dataset(self, dataset_id: str, *, format: str = "jsonl", split: str = "all"
                       ) -> Iterator[dict[str, Any]]:
        """GET /v1/datasets/{id}/export, streamed: one record per line."""
        params = {"format": format, "split": split}
        with self.http.stream("GET", f"/v1/datasets/{dataset_id}/export", params=params) as response:
            if not response.is_success:
                response.read()
                self._check(response)
            for line in response.iter_lines():
                if line.strip():
                    yield jsonlib.loads(line)

    # -- jobs ----------------------------------------------------------------------------------------------

    def submit_job(self, spec: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/jobs: {kind, dataset_id, <config fields>, priority, max_attempts} → the queued job."""
        return self._json("POST", "/v1/jobs", json=spec, headers=self._idem(idempotency_key))

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list_jobs(self, *, status: str | None = None, kind: str | None = None, dataset_id: str | None = None,
                  limit: int = 100, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Newest first, following cursors until ``limit`` jobs were yielded."""
        cursor, seen = None, 0
        while seen < limit:
            page = self._json("GET", "/v1/jobs", params={"status": status, "kind": kind, "dataset_id": dataset_id,
                                                          "cursor": cursor, "limit": min(page_size, limit - seen)})
            for item in page["items"]:
                yield item
                seen += 1
            cursor = page["next_cursor"]
            if not cursor:
                return

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def retry_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/retry")

    def job_events(self, job_id: str, *, cursor: str | int | None = None, limit: int = 100,
                   kind: list[str] | None = None) -> dict[str, Any]:
        """GET /v1/jobs/{id}/events: {items, next_cursor}."""
        return self._json("GET", f"/v1/jobs/{job_id}/events", params={"cursor": cursor, "limit": limit, "kind": kind})

    def job_metrics(self, job_id: str, *, after_step: int = 0, limit: int = 1000) -> dict[str, Any]:
        """GET /v1/jobs/{id}/metrics: per-step rows with step > after_step."""
        return self._json("GET", f"/v1/jobs/{job_id}/metrics", params={"after_step": after_step, "limit": limit})

    def lineage(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/lineage")

    def workers(self, *, alive: bool | None = None) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/workers", params={"alive": alive})["items"]

    def stream_events(self, job_id: str, *, last_event_id: int | None = None, reconnect: bool = True,
                      max_reconnects: int = 20) -> Iterator[Event]:
        """The job's events as they happen (SSE); ends after the ``end`` event, which carries the final status."""
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events/stream", headers=headers,
                                      timeout=httpx.Timeout(self.http.timeout.connect, read=60.0)) as response:
                    if not response.is_success:
                        response.read()
                        self._check(response)
                    for event in _parse_sse(response.iter_lines()):
                        failures = 0
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if event.event == "end":
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
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
        return self._json("GET", f"/v1/jobs/{job_id}/artifacts",
                          params={"prefix": prefix, "sha256": "true" if sha256 else None})["items"]

    def read_artifact(self, job_id: str, path: str) -> bytes:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/artifacts/{path}")).content

    def download_artifact(self, job_id: str, path: str, dest: str | Path) -> Path:
        """Stream one artifact to ``dest`` (a file path; written atomically)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{path}") as response:
            if not response.is_success:
                response.read()
                self._check(response)
            with partial.open("wb") as fh:
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


def _default(value: Any) -> Any:
    """The values json cannot write natively, written the way orjson (the client's former encoder) did."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """``value`` with NaN and ±inf replaced by None (JSON has no such numbers; orjson wrote null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any) -> bytes:
    """A request body: compact JSON, UTF-8, non-ASCII characters as themselves (never ``\\u`` escapes).

    NaN and ±inf become null; a string holding a lone surrogate (not encodable as UTF-8) is refused
    with TypeError before anything is sent.
    """
    options: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False,
                               "default": _default}
    try:
        text = jsonlib.dumps(value, **options)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        text = jsonlib.dumps(_finite(value), **options)  # the slow path only for the rare non-finite float
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(f"str is not valid UTF-8: {exc.reason}") from None


def _parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events framing: fields until a blank line; comments (':') ignored."""
    event_id: int | None = None
    kind = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                payload = "\n".join(data)
                try:
                    parsed = jsonlib.loads(payload)
                except ValueError:
                    parsed = {"raw": payload}
                yield Event(id=event_id, event=kind, data=parsed if isinstance(parsed, dict) else {"value": parsed})
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id":
            try:
                event_id = int(value)
            except ValueError:
                event_id = None
