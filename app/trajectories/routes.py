"""``/v1/trajectories``: ingest (single and batch), list, read, export, delete."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Annotated, Any, get_args

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app import body as request_body
from app import idempotency
from app.auth import Admin, Ingest, Principal, Reader
from app.datasets import service as datasets
from app.db import SessionDep, open_session
from app.errors import AppError, NotFound, ValidationFailed
from app.observability import TRAJECTORIES_INGESTED
from app.pagination import decode_cursor, encode_cursor
from app.routing import CheckedRoute
from app.trajectories import repository as repo
from app.trajectories import service
from app.trajectories.schemas import (
    BatchItemResult,
    BatchResult,
    Format,
    Outcome,
    Status,
    TrajectoryPage,
    TrajectoryRead,
    TrajectoryReceipt,
    TrajectorySummary,
)
from contract.formats import export as export_format

router = APIRouter(prefix="/v1/trajectories", tags=["trajectories"], route_class=CheckedRoute)


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _create_one(body: request_body.Body, request: Request, principal: Principal, key: str | None
                ) -> tuple[int, dict[str, Any]]:
    parsed = request_body.parse(body)  # in the worker thread: never on the event loop
    with open_session(request.app) as session:  # committed before the answer leaves
        return _create_one_in(session, parsed, body, request, principal, key)


def _create_one_in(session: Session, parsed: request_body.Parsed, body: request_body.Body, request: Request,
                   principal: Principal, key: str | None) -> tuple[int, dict[str, Any]]:
    item = parsed.value
    scoped, replay = idempotency.reserve(session, principal, key, "create", item,
                                         request.app.state.settings.idempotency_ttl_seconds)
    if replay is not None:
        return 200, {**replay, "created": False}
    outcome = service.ingest(session, [item], request.app.state.settings, principal, clean=parsed.clean,
                             raw_texts=lambda _: {0: bytes(body).decode("utf-8", "surrogatepass")})[0]
    fmt = _format_label(item)
    if outcome.error is not None:
        TRAJECTORIES_INGESTED.labels(format=fmt, result="rejected").inc()
        raise outcome.error
    assert outcome.receipt is not None
    out = outcome.receipt.model_dump(mode="json")
    if scoped is not None:
        idempotency.store(session, scoped, outcome.status, out)
    TRAJECTORIES_INGESTED.labels(format=fmt, result="created" if outcome.status == 201 else "replayed").inc()
    return outcome.status, out


def _format_label(item: Any) -> str:
    """A bounded metric label: the format when it is one we know."""
    fmt = item.get("format") if isinstance(item, dict) else None
    return fmt if isinstance(fmt, str) and fmt in get_args(Format) else "unknown"


@router.post(
    "", status_code=201, response_model=TrajectoryReceipt,
    openapi_extra=_body_schema({"$ref": "#/components/schemas/TrajectoryCreate"}),
    responses={200: {"description": "A replay of an already stored trajectory (same id)."},
               403: {"description": "source_not_allowed: the key is bound to other sources."},
               409: {"description": "Same external_id or Idempotency-Key with different content."},
               413: {"description": "Body over the byte limit."}, 422: {"description": "Invalid."}},
)
async def create_trajectory(request: Request, response: Response, principal: Ingest,
                            idempotency_key: idempotency.IdempotencyKey = None) -> Any:
    """Ingest one trajectory: normalized, segmented and committed before the answer."""
    body = await request_body.read(request)
    status, out = await run_in_threadpool(_create_one, body, request, principal, idempotency_key)
    response.status_code = status
    response.headers["Location"] = f"/v1/trajectories/{out['id']}"
    return out


def _create_batch(body: request_body.Body, request: Request, principal: Principal, key: str | None
                  ) -> tuple[int, dict[str, Any]]:
    settings = request.app.state.settings
    parsed = request_body.parse(body)  # in the worker thread, after the value budget
    payload = parsed.value
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ValidationFailed("The body must be {\"items\": [...]}.",
                               errors=[{"field": "items", "code": "type_error", "message": "expected a list"}])
    items = payload["items"]
    if len(items) > settings.max_batch_items:
        raise service.LimitExceeded(
            f"The batch has {len(items)} items; the limit is {settings.max_batch_items}. Nothing was stored.",
            limit={"name": "items", "max": settings.max_batch_items, "actual": len(items)})
    with open_session(request.app) as session:  # committed before the answer leaves
        return _create_batch_in(session, payload, parsed.clean, lambda wanted: request_body.item_texts(
            body, items, wanted), request, principal, key)


def _create_batch_in(session: Session, payload: dict[str, Any], clean: bool,
                     raw_texts: Callable[[Collection[int]], dict[int, str]], request: Request,
                     principal: Principal, key: str | None) -> tuple[int, dict[str, Any]]:
    settings = request.app.state.settings
    items = payload["items"]
    scoped, replay = idempotency.reserve(session, principal, key, "batch", payload, settings.idempotency_ttl_seconds)
    if replay is not None:
        return 200, replay
    outcomes = service.ingest(session, items, settings, principal, raw_texts=raw_texts, clean=clean)
    results = []
    counts = {"created": 0, "replayed": 0, "failed": 0}
    by_label: Counter[tuple[str, str]] = Counter()  # the metric, counted once per label pair
    for i, (item, o) in enumerate(zip(items, outcomes, strict=True)):
        if o.error is not None:
            counts["failed"] += 1
            by_label[_format_label(item), "rejected"] += 1
            failed = BatchItemResult(index=i, status=o.status, error=o.error.to_problem())
            results.append(failed.model_dump(mode="json"))
        else:
            assert o.receipt is not None
            kind = "created" if o.status == 201 else "replayed"
            counts[kind] += 1
            by_label[_format_label(item), kind] += 1
            # BatchItemResult's JSON form, written out: one model per item costs more than the rest of the answer
            results.append({"index": i, "status": o.status, "id": str(o.receipt.id), "created": o.receipt.created,
                            "sanitized": o.receipt.sanitized, "error": None})
    for (fmt, result), n in by_label.items():
        TRAJECTORIES_INGESTED.labels(format=fmt, result=result).inc(n)
    out = {**counts, "items": results}
    if scoped is not None:
        idempotency.store(session, scoped, 200, out)
    return 200, out


@router.post(
    "/batch", response_model=BatchResult,
    openapi_extra=_body_schema({
        "type": "object", "required": ["items"],
        "properties": {"items": {"type": "array", "maxItems": 1000,
                                 "items": {"$ref": "#/components/schemas/TrajectoryCreate"}}}}),
)
async def create_trajectories_batch(request: Request, principal: Ingest,
                                    idempotency_key: idempotency.IdempotencyKey = None) -> Any:
    """Ingest up to 1000 trajectories; one result per item (partial success; nothing dropped)."""
    body = await request_body.read(request)
    status, out = await run_in_threadpool(_create_batch, body, request, principal, idempotency_key)
    # Already in BatchResult's JSON form (test_batch_partial_success checks it): answered as is, not validated again.
    return Response(orjson.dumps(out), status_code=status, media_type="application/json")


@router.get("", response_model=TrajectoryPage)
def list_trajectories(
    session: SessionDep, _: Reader,
    source: str | None = None, teacher_model: str | None = None, task_type: str | None = None,
    outcome: Outcome | None = None, status: Status | None = None, format: Format | None = None,
    tag: Annotated[list[str] | None, Query(description="Repeat to require several tags.")] = None,
    complexity_min: float | None = None, complexity_max: float | None = None,
    created_after: datetime | None = None, created_before: datetime | None = None,
    cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> TrajectoryPage:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    f = repo.ListFilter(source=source, teacher_model=teacher_model, task_type=task_type, outcome=outcome,
                        status=status, format=format, tags=tag, complexity_min=complexity_min,
                        complexity_max=complexity_max, created_after=created_after,
                        created_before=created_before)
    rows = repo.list_page(session, f, limit + 1, decode_cursor(cursor) if cursor else None)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [TrajectorySummary.model_validate(r, from_attributes=True) for r in rows]
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return TrajectoryPage(items=items, next_cursor=next_cursor)


@router.get("/{trajectory_id}", response_model=TrajectoryRead)
def get_trajectory(trajectory_id: uuid.UUID, response: Response, session: SessionDep, _: Reader,
                   include_raw: bool = False) -> TrajectoryRead:
    """The stored fields, canonical messages, current spans and revision (also as ``ETag``)."""
    row = service.get_or_404(session, trajectory_id)
    spans = repo.current_spans(session, row.id, row.span_revision)
    response.headers["ETag"] = f'"{row.span_revision}"'
    data = {c: getattr(row, c) for c in TrajectorySummary.model_fields if c != "metadata"}
    return TrajectoryRead(
        **data, task=row.task, metadata=row.metadata_, messages=row.messages, tools=row.tools,
        spans=spans, content_sha256=row.content_sha256, updated_at=row.updated_at,
        raw=row.raw if include_raw else None,
    )


@router.get("/{trajectory_id}/export", response_model=dict[str, Any])
def export_trajectory(trajectory_id: uuid.UUID, session: SessionDep, _: Reader,
                      original: bool = False) -> Any:
    """The trajectory as a request body in its own input format (``original=true``: byte-for-byte the
    payload as received), ready to POST to another Distillery or feed back to the source tool."""
    if original:
        raw = repo.raw_text(session, trajectory_id)
        if raw is None:
            raise NotFound(f"No trajectory {trajectory_id}.")
        return Response(raw.encode("utf-8", "surrogatepass"), media_type="application/json")
    row = service.get_or_404(session, trajectory_id)
    spans = repo.current_spans(session, row.id, row.span_revision)
    body: dict[str, Any] = {
        "format": row.format, "source": row.source, "external_id": row.external_id,
        "teacher_model": row.teacher_model, "task": row.task, "task_type": row.task_type,
        "outcome": row.outcome, "reward": row.reward, "tags": row.tags, "metadata": row.metadata_,
    }
    body.update(export_format(row.format, row.messages, row.tools, spans))
    return body


@router.delete("/{trajectory_id}", status_code=204,
               responses={409: {"description": "trajectory_in_dataset: datasets hold it (body: datasets)."}})
def delete_trajectory(trajectory_id: uuid.UUID, session: SessionDep, principal: Admin,
                      force: Annotated[bool, Query(description="Delete even when datasets hold it: each keeps "
                                                               "its copy and records a tombstone.")] = False
                      ) -> Response:
    """Delete a trajectory and its span history (admin); refused while datasets hold it, unless forced."""
    datasets.before_trajectory_delete(session, trajectory_id, principal.key_id, force=force)
    if not repo.delete_trajectory(session, trajectory_id):
        service.get_or_404(session, trajectory_id)
    return Response(status_code=204)


__all__ = ["AppError", "router"]
