"""Annotation routes: span revisions and edits, history and diffs, review, the annotation queue,
segmenter statistics and rendered views. Reads need annotate|curate|operate, writes annotate,
bulk review curate, stats curate|annotate."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from app.annotations import repository as repo
from app.annotations import service
from app.annotations.render import render_html, render_text
from app.annotations.schemas import (
    AnnotationStats,
    BulkReviewRequest,
    BulkReviewResult,
    ClaimRequest,
    ClaimResult,
    ExtendRequest,
    LeaseRead,
    ReviewHistory,
    ReviewRead,
    ReviewRequest,
    RevisionPage,
    SpanDiff,
    SpanEdits,
    SpanSetRead,
    SpanSetWritten,
    SpansReplace,
)
from app.auth import Principal, Reader, require, require_any
from app.db import SessionDep
from app.pagination import invalid_cursor
from app.routing import CheckedRoute
from app.trajectories.schemas import Format
from contract.pglimits import INT4_MAX, parse_digits

router = APIRouter(tags=["annotations"], route_class=CheckedRoute)

Annotator = Annotated[Principal, Depends(require("annotate"))]
Curator = Annotated[Principal, Depends(require("curate"))]
StatsReader = Annotated[Principal, Depends(require_any("curate", "annotate"))]
IfMatch = Annotated[str | None, Header(alias="If-Match", description='The span revision you hold, e.g. "3".')]

_T = "/v1/trajectories/{trajectory_id}"
_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such trajectory."},
    409: {"description": "not_editable: approved or rejected; reopen first."},
    412: {"description": "precondition_failed: If-Match is not the current revision (body: current_revision)."},
    422: {"description": "invalid_spans / invalid_edit, each error naming spans[i] or ops[i]."},
    428: {"description": "precondition_required: If-Match missing."},
}


def _span_set(trajectory_id: uuid.UUID, rev: Any) -> dict[str, Any]:
    return {"trajectory_id": trajectory_id, "revision": rev.revision, "spans": rev.spans, "source": rev.source,
            "author_key_id": rev.author_key_id, "reason": rev.reason, "created_at": rev.created_at}


@router.get(_T + "/spans", response_model=SpanSetRead)
def get_spans(trajectory_id: uuid.UUID, response: Response, session: SessionDep, _: Reader) -> Any:
    """The current span set and its revision (also as ``ETag``: send it back as ``If-Match``)."""
    rev = service.current_revision(session, trajectory_id)
    response.headers["ETag"] = f'"{rev.revision}"'
    return _span_set(trajectory_id, rev)


@router.put(_T + "/spans", response_model=SpanSetWritten, responses=_WRITE_RESPONSES)
def replace_spans(trajectory_id: uuid.UUID, body: SpansReplace, request: Request, response: Response,
                  session: SessionDep, principal: Annotator, if_match: IfMatch = None) -> Any:
    """Replace the whole span set; stored as the next revision."""
    rev, created = service.replace_spans(session, request.app.state.settings, trajectory_id, if_match, body.spans,
                                         principal.key_id, body.reason)
    response.headers["ETag"] = f'"{rev.revision}"'
    return {**_span_set(trajectory_id, rev), "created": created}


@router.post(_T + "/spans/edits", response_model=SpanSetWritten, responses=_WRITE_RESPONSES)
def edit_spans(trajectory_id: uuid.UUID, body: SpanEdits, request: Request, response: Response,
               session: SessionDep, principal: Annotator, if_match: IfMatch = None) -> Any:
    """Apply edit operations atomically (all or none); stored as the next revision."""
    rev, created = service.edit_spans(session, request.app.state.settings, trajectory_id, if_match, body.ops,
                                      principal.key_id, body.reason)
    response.headers["ETag"] = f'"{rev.revision}"'
    return {**_span_set(trajectory_id, rev), "created": created}


@router.get(_T + "/revisions", response_model=RevisionPage)
def list_revisions(trajectory_id: uuid.UUID, session: SessionDep, _: Reader, cursor: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    """Every revision, oldest first; pass ``next_cursor`` back as ``cursor``."""
    service.trajectory_or_404(session, trajectory_id)
    after = parse_digits(cursor) if cursor is not None else 0
    if after is None or after > INT4_MAX:
        raise invalid_cursor()
    rows = repo.list_revisions(session, trajectory_id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [r._mapping for r in rows], "next_cursor": str(rows[-1].revision) if more and rows else None}


@router.get(_T + "/revisions/diff", response_model=SpanDiff)
def diff_revisions(trajectory_id: uuid.UUID, session: SessionDep, _: Reader,
                   from_: Annotated[int | None, Query(alias="from", ge=1, le=INT4_MAX, description="Default 1.")
                                    ] = None,
                   to: Annotated[int | None, Query(ge=1, le=INT4_MAX, description="Default: the current revision.")
                                 ] = None
                   ) -> Any:
    """Spans added, removed and changed between two revisions (see app/annotations/diff.py)."""
    return service.revisions_diff(session, trajectory_id, from_, to)


@router.get(_T + "/revisions/{revision}", response_model=SpanSetRead)
def get_revision(trajectory_id: uuid.UUID, revision: Annotated[int, Path(ge=1, le=INT4_MAX)], session: SessionDep,
                 _: Reader) -> Any:
    """One revision's full span set."""
    return _span_set(trajectory_id, service.revision_or_404(session, trajectory_id, revision))


@router.post(_T + "/review", response_model=ReviewRead,
             responses={409: {"description": "invalid_transition (body: status, allowed_actions)."},
                        412: {"description": "If-Match sent and stale."}})
def review_trajectory(trajectory_id: uuid.UUID, body: ReviewRequest, session: SessionDep, principal: Annotator,
                      if_match: IfMatch = None) -> Any:
    """start | approve | reject | reopen. Optional ``If-Match``: act only on that span revision."""
    return service.review(session, trajectory_id, body.action, body.note, principal.key_id, if_match)


@router.get(_T + "/reviews", response_model=ReviewHistory)
def list_reviews(trajectory_id: uuid.UUID, session: SessionDep, _: Reader) -> Any:
    """The review history, oldest first."""
    service.trajectory_or_404(session, trajectory_id)
    return {"items": [r._mapping for r in repo.list_review_events(session, trajectory_id)]}


@router.post("/v1/trajectories/review/bulk", response_model=BulkReviewResult)
def bulk_review(body: BulkReviewRequest, session: SessionDep, principal: Curator) -> Any:
    """Approve or reject every pending/in_review trajectory matching a filter (``dry_run`` counts only).
    Trajectories under a live annotation lease are left alone."""
    return service.bulk_review(session, body.action, body.filter, body.note, principal.key_id, body.dry_run)


@router.post("/v1/annotation-queue/claim", response_model=ClaimResult,
             responses={204: {"description": "Nothing pending matches."}})
def claim(session: SessionDep, principal: Annotator, body: ClaimRequest | None = None) -> Any:
    """Lease the oldest pending trajectory nobody holds. Does not change its review status."""
    claimed = service.claim(session, body or ClaimRequest(), principal.key_id)
    if claimed is None:
        return Response(status_code=204)
    return claimed


@router.post("/v1/annotation-queue/{lease_id}/release", response_model=LeaseRead)
def release_lease(lease_id: uuid.UUID, session: SessionDep, principal: Annotator) -> Any:
    """Give the trajectory back to the queue now."""
    return service.end_lease(session, lease_id, principal.key_id, "released")


@router.post("/v1/annotation-queue/{lease_id}/complete", response_model=LeaseRead)
def complete_lease(lease_id: uuid.UUID, session: SessionDep, principal: Annotator) -> Any:
    """End the lease once the work is done (typically after approve or reject)."""
    return service.end_lease(session, lease_id, principal.key_id, "completed")


@router.post("/v1/annotation-queue/{lease_id}/extend", response_model=LeaseRead)
def extend_lease(lease_id: uuid.UUID, session: SessionDep, principal: Annotator,
                 body: ExtendRequest | None = None) -> Any:
    """Push the expiry to now + ``lease_seconds`` (default 900, at most 3600)."""
    return service.extend_lease(session, lease_id, principal.key_id, (body or ExtendRequest()).lease_seconds)


@router.get("/v1/stats/annotation", response_model=AnnotationStats)
def annotation_stats(session: SessionDep, _: StatsReader, source: str | None = None,
                     format: Format | None = None) -> Any:
    """Segmenter precision / recall / F1 per format and kind, against approved final spans."""
    return service.annotation_stats(session, source, format)


@router.get(_T + "/render", response_class=Response,
            responses={200: {"content": {"text/plain": {}, "text/html": {}}}})
def render_trajectory(trajectory_id: uuid.UUID, session: SessionDep, _: Reader,
                      format: Literal["text", "html"] = "text",
                      revision: Annotated[int | None, Query(ge=1, le=INT4_MAX, description="Default: current.")] = None
                      ) -> Response:
    """The messages with their spans marked: plain text, or a standalone HTML page."""
    row = service.trajectory_or_404(session, trajectory_id)
    rev = service.revision_or_404(session, trajectory_id, revision or row.span_revision)
    if format == "text":
        return Response(render_text(row.messages, rev.spans), media_type="text/plain; charset=utf-8")
    meta = {"id": row.id, "source": row.source, "format": row.format, "status": row.status}
    return Response(render_html(meta, row.messages, rev.spans, rev.revision), media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                             "X-Content-Type-Options": "nosniff"})
