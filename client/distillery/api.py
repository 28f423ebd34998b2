"""The HTTP API's calls, built once for both clients (``Distillery`` and ``AsyncDistillery`` only send them).

Creating POSTs (trajectories, batches, jobs, datasets) carry an ``Idempotency-Key``: the caller's, else
one made here, once per logical call and kept across its retries. The server deduplicates it on
trajectories, batches and jobs; ``POST /v1/datasets`` does not yet, so a dataset is created at most
once only where the server provably did nothing (the transport's rule for non-repeatable calls).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from distillery.transport import Call, new_idempotency_key

TERMINAL = ("succeeded", "failed", "cancelled")


def ingest(trajectory: dict[str, Any], idempotency_key: str | None) -> Call:
    return Call.create("/v1/trajectories", trajectory, idempotency_key)


def ingest_batch(items: list[dict[str, Any]], idempotency_key: str | None) -> Call:
    return Call.create("/v1/trajectories/batch", {"items": items}, idempotency_key)


def ingest_encoded(encoded: list[bytes], idempotency_key: str | None = None) -> Call:
    """A batch of items encoded already (the batcher encodes each one when it is submitted)."""
    return Call("POST", "/v1/trajectories/batch", b'{"items":[' + b",".join(encoded) + b"]}",
                headers={"Content-Type": "application/json",
                         "Idempotency-Key": idempotency_key or new_idempotency_key()})


def review_bulk(action: str, filter: dict[str, Any], options: dict[str, Any]) -> Call:
    # Repeating it is harmless: a second pass finds nothing pending that the first did not settle.
    return Call.post("/v1/trajectories/review/bulk", {"action": action, "filter": filter, **options}, repeatable=True)


def create_dataset(name: str, filter: dict[str, Any] | None, options: dict[str, Any],
                   idempotency_key: str | None) -> Call:
    call = Call.create("/v1/datasets", {"name": name, "filter": filter or {}, **options}, idempotency_key)
    return dataclasses.replace(call, repeatable=False)


def get_dataset(dataset_id: str) -> Call:
    return Call.get(f"/v1/datasets/{dataset_id}")


def export_dataset(dataset_id: str, format: str, split: str) -> Call:
    return Call.get(f"/v1/datasets/{dataset_id}/export", format=format, split=split)


def submit_job(spec: dict[str, Any], idempotency_key: str | None) -> Call:
    return Call.create("/v1/jobs", spec, idempotency_key)


def get_job(job_id: str) -> Call:
    return Call.get(f"/v1/jobs/{job_id}")


def list_jobs_page(status: str | None, kind: str | None, dataset_id: str | None, cursor: str | None,
                   limit: int) -> Call:
    return Call.get("/v1/jobs", status=status, kind=kind, dataset_id=dataset_id, cursor=cursor, limit=limit)


def cancel_job(job_id: str) -> Call:
    return Call.post(f"/v1/jobs/{job_id}/cancel", repeatable=True)  # cancelling twice changes nothing


def retry_job(job_id: str) -> Call:
    return Call.post(f"/v1/jobs/{job_id}/retry")


def job_events(job_id: str, cursor: str | int | None, limit: int, kind: list[str] | None) -> Call:
    return Call.get(f"/v1/jobs/{job_id}/events", cursor=cursor, limit=limit, kind=kind)


def job_metrics(job_id: str, after_step: int, limit: int) -> Call:
    return Call.get(f"/v1/jobs/{job_id}/metrics", after_step=after_step, limit=limit)


def event_stream(job_id: str, last_event_id: int | None) -> Call:
    call = Call.get(f"/v1/jobs/{job_id}/events/stream")
    call.headers["Accept"] = "text/event-stream"
    if last_event_id is not None:
        call.headers["Last-Event-ID"] = str(last_event_id)
    return call


def lineage(job_id: str) -> Call:
    return Call.get(f"/v1/jobs/{job_id}/lineage")


def workers(alive: bool | None) -> Call:
    return Call.get("/v1/workers", alive=alive)


def list_artifacts(job_id: str, prefix: str | None, sha256: bool) -> Call:
    return Call.get(f"/v1/jobs/{job_id}/artifacts", prefix=prefix, sha256="true" if sha256 else None)


def artifact(job_id: str, path: str) -> Call:
    return Call.get(f"/v1/jobs/{job_id}/artifacts/{path}")
