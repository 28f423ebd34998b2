"""``/v1/jobs``: submit, list, read, cancel, retry; metrics, events (JSON and SSE), artifacts, lineage.

Every route needs the ``operate`` scope. Submissions honour ``Idempotency-Key`` like ingest does (a
replay answers the original job; another body under the same key is 409).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.orm import Session

from app import body as request_body
from app import idempotency
from app.auth import Principal, require
from app.db import SessionDep
from app.jobs import repository as repo
from app.jobs import service, token_views
from app.jobs.responses import ArtifactList, EventPage, JobPage, JobRead, MetricsPage, job_read
from app.jobs.stream import event_stream
from app.jobs.validation import openapi_components
from app.pagination import decode_cursor, encode_cursor, invalid_cursor
from app.routing import CheckedRoute, check_storable
from contract.pglimits import INT4_MAX, parse_digits

__all__ = ["openapi_components", "router"]

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=CheckedRoute)

Operator = Annotated[Principal, Depends(require("operate"))]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
SSE = "text/event-stream"


def _submit(session: Session, raw: request_body.Body, request: Request, principal: Principal, key: str | None
            ) -> tuple[int, dict[str, Any]]:
    parsed = request_body.parse(raw)  # in the worker thread
    check_storable(parsed)
    body = parsed.value
    scoped, replay = idempotency.reserve(session, principal, key, "jobs.submit", body,
                                         request.app.state.settings.idempotency_ttl_seconds)
    if replay is not None:
        return 202, replay
    row = service.submit(session, body, request.app.state.settings, principal.key_id)
    out = job_read(row).model_dump(mode="json")
    if scoped is not None:
        idempotency.store(session, scoped, 202, out)
    return 202, out


@router.post(
    "", status_code=202, response_model=JobRead,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/JobCreate"}}}}},
    responses={422: {"description": "validation_error (field paths), dataset_not_found, empty_train_split, "
                                    "model_path_not_allowed, model_not_found, invalid_model_reference, "
                                    "tokenizer_mismatch (body: differences)."},
               409: {"description": "idempotency_key_reused."}},
)
async def submit_job(request: Request, response: Response, session: SessionDep, principal: Operator,
                     idempotency_key: idempotency.IdempotencyKey = None) -> Any:
    """Validate the whole job (config, models, tokenizers, dataset) and queue it; workers are woken by NOTIFY."""
    raw = await request_body.read(request)
    status, out = await run_in_threadpool(_submit, session, raw, request, principal, idempotency_key)
    response.status_code = status
    response.headers["Location"] = f"/v1/jobs/{out['id']}"
    return out


@router.get("", response_model=JobPage)
def list_jobs(session: SessionDep, _: Operator, status: JobStatus | None = None, kind: str | None = None,
              dataset_id: uuid.UUID | None = None, cursor: str | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    f = repo.JobFilter(status=status, kind=kind, dataset_id=dataset_id)
    rows = repo.list_jobs(session, f, limit + 1, decode_cursor(cursor) if cursor else None)
    more = len(rows) > limit
    rows = rows[:limit]
    return JobPage(items=[job_read(r) for r in rows],
                   next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)


@router.get("/{job_id}", response_model=JobRead)
def get_job(job_id: uuid.UUID, session: SessionDep, _: Operator) -> Any:
    """Status, attempts, progress {step, total, tokens_per_s, eta_s, losses, weights}, lease, error, result."""
    return job_read(service.get_or_404(session, job_id))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobRead,
             responses={409: {"description": "invalid_transition: the job already succeeded or failed."}})
def cancel_job(job_id: uuid.UUID, session: SessionDep, _: Operator) -> Any:
    """A queued job is cancelled at once; a running one gets ``cancel_requested`` and its worker stops it
    (checkpointing first) within about a second."""
    return job_read(service.cancel(session, job_id))


@router.post("/{job_id}/retry", status_code=202, response_model=JobRead,
             responses={409: {"description": "invalid_transition: only failed or cancelled jobs are retried."}})
def retry_job(job_id: uuid.UUID, session: SessionDep, principal: Operator) -> Any:
    """Queue a failed or cancelled job again with its attempts reset; it resumes from its newest checkpoint."""
    return job_read(service.retry(session, job_id, principal.key_id))


@router.get("/{job_id}/metrics", response_model=MetricsPage)
def get_metrics(job_id: uuid.UUID, request: Request, session: SessionDep, _: Operator,
                after_step: Annotated[int, Query(ge=0, le=INT4_MAX)] = 0,
                limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> Any:
    """Per-step metrics (per-kind losses, span weights, lr, grad norm, tokens/s) with step > ``after_step``."""
    return service.metrics(session, request.app.state.settings, job_id, after_step, limit)


def _after_id(cursor: str | None, last_event_id: str | None) -> int:
    raw = last_event_id if last_event_id not in (None, "") else cursor
    if raw in (None, ""):
        return 0
    value = parse_digits(str(raw).strip())
    if value is None:
        raise invalid_cursor()
    return value


def _stream(request: Request, job_id: uuid.UUID, after_id: int, heartbeat: float) -> StreamingResponse:
    return StreamingResponse(
        event_stream(request.app.state.db, job_id, after_id, heartbeat=heartbeat, disconnected=request.is_disconnected,
                     waiters=request.app.state.job_waiters),
        media_type=SSE, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", description="Resume an SSE stream after this id.")]
Heartbeat = Annotated[float, Query(ge=0.5, le=300, description="Seconds between keep-alive comments (SSE).")]


@router.get("/{job_id}/events", response_model=EventPage,
            responses={200: {"content": {SSE: {"description": "With Accept: text/event-stream, as /events/stream."}}}})
def list_events(job_id: uuid.UUID, request: Request, session: SessionDep, _: Operator,
                cursor: Annotated[str | None, Query(description="An event id: return the events after it.")] = None,
                kind: Annotated[list[Literal["state", "progress", "log", "metric"]] | None, Query()] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100, last_event_id: LastEventId = None,
                heartbeat: Heartbeat = 15.0) -> Any:
    """The job's event log (state changes, progress, log lines) oldest first, after ``cursor``."""
    service.get_or_404(session, job_id)
    after = _after_id(cursor, last_event_id)
    if SSE in request.headers.get("accept", ""):
        return _stream(request, job_id, after, heartbeat)
    rows = repo.list_events(session, job_id, after, limit, kind)
    return {"items": [dict(r._mapping) for r in rows],
            "next_cursor": str(rows[-1].id) if rows else (str(after) if after else None)}


@router.get("/{job_id}/events/stream", response_class=StreamingResponse,
            responses={200: {"content": {SSE: {}}, "description": "id/event/data frames; 'end' closes the stream."}})
def stream_events(job_id: uuid.UUID, request: Request, session: SessionDep, _: Operator,
                  cursor: str | None = None, last_event_id: LastEventId = None,
                  heartbeat: Heartbeat = 15.0) -> StreamingResponse:
    """Server-Sent Events: every event as ``event: <kind>``, then ``event: end`` once the job is finished."""
    service.get_or_404(session, job_id)
    return _stream(request, job_id, _after_id(cursor, last_event_id), heartbeat)


@router.get("/{job_id}/artifacts", response_model=ArtifactList)
def list_artifacts(job_id: uuid.UUID, request: Request, session: SessionDep, _: Operator,
                   prefix: Annotated[str | None, Query(description="Only files under this folder, e.g. final.")
                                     ] = None,
                   sha256: Annotated[bool, Query(description="Hash every file (slow for checkpoints).")] = False
                   ) -> Any:
    """The job's files: checkpoints, the final model (save_pretrained), reports, plots, metrics."""
    return service.list_artifacts(session, request.app.state.settings, job_id, prefix, sha256)


@router.get("/{job_id}/artifacts/{path:path}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 404: {"description": "artifact_not_found"}})
def download_artifact(job_id: uuid.UUID, path: str, request: Request, session: SessionDep, _: Operator
                      ) -> FileResponse:
    """One file of the job's folder (paths as listed); nothing outside that folder is ever served."""
    target = service.artifact_path(session, request.app.state.settings, job_id, path)
    return FileResponse(target)


@router.get("/{job_id}/lineage")
def get_lineage(job_id: uuid.UUID, request: Request, session: SessionDep, _: Operator,
                items_limit: Annotated[int, Query(ge=0, le=100_000)] = 1000) -> Response:
    """The job, its dataset (name, content hash), the pinned (trajectory_id, span_revision) items, the
    data/code hashes its checkpoints recorded, and its model artifacts."""
    body = service.lineage(session, request.app.state.settings, job_id, items_limit)
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/{job_id}/token-views/{trajectory_id}",
            responses={404: {"description": "not_found (job) or token_views_not_found."}})
def get_token_views(job_id: uuid.UUID, trajectory_id: uuid.UUID, request: Request, session: SessionDep,
                    _: Operator) -> Any:
    """A trajectory as this job's student is trained on it: per rendered example, the tokens and one kind
    letter per token (r reason, a action, o observation, c context) and the end-of-turn positions; see
    ``contract/token_views.py``. Only the first trajectories of the dataset are kept."""
    return token_views.token_views(session, request.app.state.settings, job_id, trajectory_id)
