"""``/v1/datasets``: create a snapshot (curate), list and read snapshots and their items (curate or
operate), export them as streamed JSON lines (curate or operate), delete one (admin)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app import idempotency
from app.auth import Admin, Principal, require, require_any
from app.datasets import repository as repo
from app.datasets import service
from app.datasets.export import read_page
from app.datasets.schemas import (
    DatasetCreate,
    DatasetItemPage,
    DatasetPage,
    DatasetRead,
    ExportFormat,
    ExportSplit,
    Split,
)
from app.db import SessionDep, open_session
from app.pagination import decode_cursor, encode_cursor, invalid_cursor
from app.routing import CheckedRoute
from contract.pglimits import INT4_MAX, parse_digits

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=CheckedRoute)

Curator = Annotated[Principal, Depends(require("curate"))]
DatasetReader = Annotated[Principal, Depends(require_any("curate", "operate"))]

NDJSON = "application/x-ndjson"


@router.post("", status_code=201, response_model=DatasetRead,
             responses={200: {"description": "A replay (same Idempotency-Key and body): the snapshot made first."},
                        409: {"description": "idempotency_key_reused: the key was used with another body."},
                        422: {"description": "Invalid request, or empty_dataset: the filter selects nothing."}})
def create_dataset(body: DatasetCreate, request: Request, response: Response, session: SessionDep,
                   principal: Curator, idempotency_key: idempotency.IdempotencyKey = None) -> Any:
    """Freeze the trajectories the filter selects (default: approved only) into an immutable
    snapshot pinned to their current span revisions, with a seeded train/eval split, statistics and
    a content hash. With an `Idempotency-Key`, a retried request answers the snapshot it made first
    instead of freezing a second one."""
    settings = request.app.state.settings
    ttl = settings.idempotency_ttl_seconds
    scoped, replay = idempotency.reserve(session, principal, idempotency_key, "datasets.create",
                                         body.model_dump(mode="json"), ttl)
    if replay is not None:
        response.status_code = 200
        response.headers["Location"] = f"/v1/datasets/{replay['id']}"
        return replay
    row = service.create(session, body, principal.key_id, timeout_ms=settings.db_snapshot_timeout_ms)
    out = DatasetRead.model_validate(service.to_read(row, 0)).model_dump(mode="json")
    if scoped is not None:
        idempotency.store(session, scoped, 201, out)
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return out


@router.get("", response_model=DatasetPage)
def list_datasets(session: SessionDep, _: DatasetReader, name: str | None = None, cursor: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    rows = repo.list_page(session, name, limit + 1, decode_cursor(cursor) if cursor else None)
    more = len(rows) > limit
    rows = rows[:limit]
    deleted = repo.tombstone_counts(session, [r.id for r in rows])
    return {"items": [service.to_read(r, deleted.get(r.id, 0)) for r in rows],
            "next_cursor": encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None}


@router.get("/{dataset_id}", response_model=DatasetRead)
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, _: DatasetReader) -> Any:
    """The snapshot: its recipe, counts, statistics and content hash."""
    return service.read(session, dataset_id)


@router.get("/{dataset_id}/items", response_model=DatasetItemPage)
def list_dataset_items(dataset_id: uuid.UUID, session: SessionDep, _: DatasetReader, split: Split | None = None,
                       cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Items in dataset order: trajectory id, pinned span revision, split, complexity."""
    service.get_or_404(session, dataset_id)
    after = parse_digits(cursor) if cursor else -1
    if after is None or after > INT4_MAX:
        raise invalid_cursor()
    rows = repo.list_items(session, dataset_id, split, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [r._mapping for r in rows], "next_cursor": str(rows[-1].position) if more and rows else None}


def _page(request: Request, dataset_id: uuid.UUID, fmt: str, split: str | None, after: int
          ) -> tuple[bytes, int, bool]:
    """One page of an export in a session of its own (joined to the test transaction when the app has a
    ``session_factory``): nothing is held between pages."""
    with open_session(request.app) as session:
        return read_page(session, dataset_id, fmt, split, after)


@router.get("/{dataset_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {NDJSON: {}}, "description": "One JSON object per line."}})
def export_dataset(dataset_id: uuid.UUID, request: Request, session: SessionDep, _: DatasetReader,
                   format: ExportFormat = "jsonl", split: ExportSplit = "all") -> StreamingResponse:
    """The records as JSON lines, streamed: ``jsonl`` (canonical messages + pinned spans + metadata,
    what the trainer reads) or ``openai`` (chat fine-tuning shape for OpenAI and TRL)."""
    row = service.get_or_404(session, dataset_id)
    selected = None if split == "all" else split

    async def body() -> AsyncIterator[bytes]:
        after, finished = -1, False
        while not finished:
            data, after, finished = await run_in_threadpool(_page, request, dataset_id, format, selected, after)
            if data:
                yield data

    filename = f"{row.name}-{split}.{'openai.' if format == 'openai' else ''}jsonl"
    return StreamingResponse(body(), media_type=NDJSON, headers={
        "Content-Disposition": content_disposition(filename), "X-Dataset-Sha256": row.content_sha256})


def content_disposition(filename: str) -> str:
    """An attachment header any name survives: an ASCII fallback and the exact name per RFC 6266 / 5987."""
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in filename)
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.delete("/{dataset_id}", status_code=204,
               responses={409: {"description": "dataset_in_use: jobs name this dataset (body: jobs)."}})
def delete_dataset(dataset_id: uuid.UUID, session: SessionDep, _: Admin) -> Response:
    """Delete a snapshot with its items (admin); refused while any job names it."""
    service.delete(session, dataset_id)
    return Response(status_code=204)
