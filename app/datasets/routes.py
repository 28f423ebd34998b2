"""``/v1/datasets``: create a snapshot (curate), list and read snapshots and their items (curate or
operate), export them as streamed JSON lines (curate or operate), delete one (admin)."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.auth import Admin, Principal, require, require_any
from app.datasets import repository as repo
from app.datasets import service
from app.datasets.export import iter_export
from app.datasets.schemas import (
    DatasetCreate,
    DatasetItemPage,
    DatasetPage,
    DatasetRead,
    ExportFormat,
    ExportSplit,
    Split,
)
from app.db import SessionDep, session_scope
from app.pagination import decode_cursor, encode_cursor, invalid_cursor

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

Curator = Annotated[Principal, Depends(require("curate"))]
DatasetReader = Annotated[Principal, Depends(require_any("curate", "operate"))]

NDJSON = "application/x-ndjson"


@router.post("", status_code=201, response_model=DatasetRead,
             responses={422: {"description": "Invalid request, or empty_dataset: the filter selects nothing."}})
def create_dataset(body: DatasetCreate, response: Response, session: SessionDep, principal: Curator) -> Any:
    """Freeze the trajectories the filter selects (default: approved only) into an immutable
    snapshot pinned to their current span revisions, with a seeded train/eval split, statistics and
    a content hash."""
    row = service.create(session, body, principal.key_id)
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return service.to_read(row, 0)


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
    if cursor and not cursor.isdigit():
        raise invalid_cursor()
    rows = repo.list_items(session, dataset_id, split, int(cursor) if cursor else -1, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [r._mapping for r in rows], "next_cursor": str(rows[-1].position) if more and rows else None}


def _stream_session(request: Request) -> Generator[Session, None, None]:
    """A session of its own for a streamed body (the request's closes when the handler returns);
    joined to the test transaction when the app has a ``session_factory``."""
    factory = getattr(request.app.state, "session_factory", None)
    yield from (factory() if factory is not None else session_scope(request.app.state.db))


@router.get("/{dataset_id}/export", response_class=StreamingResponse,
            responses={200: {"content": {NDJSON: {}}, "description": "One JSON object per line."}})
def export_dataset(dataset_id: uuid.UUID, request: Request, session: SessionDep, _: DatasetReader,
                   format: ExportFormat = "jsonl", split: ExportSplit = "all") -> StreamingResponse:
    """The records as JSON lines, streamed: ``jsonl`` (canonical messages + pinned spans + metadata,
    what the trainer reads) or ``openai`` (chat fine-tuning shape for OpenAI and TRL)."""
    row = service.get_or_404(session, dataset_id)
    selected = None if split == "all" else split

    def body() -> Iterator[bytes]:
        sessions = _stream_session(request)
        try:
            yield from iter_export(next(sessions), dataset_id, format, selected)
        finally:
            sessions.close()

    filename = f"{row.name}-{split}.{'openai.' if format == 'openai' else ''}jsonl"
    return StreamingResponse(body(), media_type=NDJSON, headers={
        "Content-Disposition": f'attachment; filename="{_safe(filename)}"', "X-Dataset-Sha256": row.content_sha256})


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@router.delete("/{dataset_id}", status_code=204,
               responses={409: {"description": "dataset_in_use: jobs name this dataset (body: jobs)."}})
def delete_dataset(dataset_id: uuid.UUID, session: SessionDep, _: Admin) -> Response:
    """Delete a snapshot with its items (admin); refused while any job names it."""
    service.delete(session, dataset_id)
    return Response(status_code=204)
