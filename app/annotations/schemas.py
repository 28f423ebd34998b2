"""Request and response shapes for annotation: span revisions, edit operations, review, queue, stats.

Span sets in requests are plain objects checked by ``contract.spans.validate_spans`` (so
errors name ``spans[i]``), not by pydantic. Edit operations are a tagged union on ``op``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.trajectories.schemas import Format, KindName, Outcome, SpanModel

ReviewAction = Literal["start", "approve", "reject", "reopen"]
MAX_OPS = 1000
DEFAULT_LEASE_SECONDS = 900
MAX_LEASE_SECONDS = 3600

Reason = Annotated[str | None, Field(None, max_length=2000, description="Why; kept in the revision history.")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- span sets and revisions --------------------------------------------------------------------

class SpanSetRead(BaseModel):
    trajectory_id: uuid.UUID
    revision: int
    spans: list[SpanModel]
    source: str = Field(description="auto (segmenter), client (sent at ingest) or annotator.")
    author_key_id: str | None
    reason: str | None
    created_at: datetime


class SpanSetWritten(SpanSetRead):
    created: bool = Field(description="False when the write equalled the current spans: no revision was added.")


class SpansReplace(_Strict):
    spans: list[Any] = Field(description="The whole new span set [{message, start, end, kind}], sorted.")
    reason: Reason = None


class SetKindOp(_Strict):
    op: Literal["set_kind"]
    index: int = Field(ge=0)
    kind: KindName


class MoveOp(_Strict):
    op: Literal["move"]
    index: int = Field(ge=0)
    start: int | None = Field(None, ge=0)
    end: int | None = Field(None, ge=0)


class SplitOp(_Strict):
    op: Literal["split"]
    index: int = Field(ge=0)
    at: int = Field(ge=0, description="Offset in the message; start < at < end.")
    kind_right: KindName | None = Field(None, description="Kind of the right part (default: the span's kind).")


class MergeOp(_Strict):
    op: Literal["merge"]
    index: int = Field(ge=0, description="Merged with the span at index + 1.")
    kind: KindName | None = Field(None, description="Kind of the merged span (default: the left span's kind).")


class DeleteOp(_Strict):
    op: Literal["delete"]
    index: int = Field(ge=0)


class AddOp(_Strict):
    op: Literal["add"]
    message: int = Field(ge=0)
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    kind: KindName


EditOp = Annotated[SetKindOp | MoveOp | SplitOp | MergeOp | DeleteOp | AddOp, Field(discriminator="op")]


class SpanEdits(_Strict):
    ops: list[EditOp] = Field(min_length=1, max_length=MAX_OPS,
                              description="Applied in order; each index refers to the list left by the ops before.")
    reason: Reason = None


class RevisionSummary(BaseModel):
    revision: int
    source: str
    author_key_id: str | None
    reason: str | None
    created_at: datetime
    n_spans: int


class RevisionPage(BaseModel):
    items: list[RevisionSummary]
    next_cursor: str | None


class SpanChange(BaseModel):
    from_index: int
    to_index: int
    before: SpanModel
    after: SpanModel
    fields: list[str] = Field(description="Which of kind, start, end differ.")


class IndexedSpan(BaseModel):
    index: int
    span: SpanModel


class SpanDiff(BaseModel):
    trajectory_id: uuid.UUID
    from_revision: int
    to_revision: int
    added: list[IndexedSpan]
    removed: list[IndexedSpan]
    changed: list[SpanChange]
    unchanged: int


# ---- review -------------------------------------------------------------------------------------

class ReviewRequest(_Strict):
    action: ReviewAction
    note: str | None = Field(None, max_length=10_000)


class ReviewRead(BaseModel):
    trajectory_id: uuid.UUID
    status: str
    previous_status: str
    span_revision: int
    reviewer_key_id: str | None
    review_note: str | None
    reviewed_at: datetime | None
    allowed_actions: list[str]


class ReviewEventRead(BaseModel):
    id: int
    action: str
    from_status: str
    to_status: str
    actor_key_id: str
    note: str | None
    span_revision: int
    bulk: bool
    at: datetime


class ReviewHistory(BaseModel):
    items: list[ReviewEventRead]


class BulkFilter(_Strict):
    source: str | None = None
    task_type: str | None = None
    teacher_model: str | None = None
    outcome: Outcome | None = None
    status: Literal["pending", "in_review"] | None = Field(
        None, description="Only pending or in_review trajectories are ever changed; default both.")
    tags: list[str] | None = Field(None, description="All required.")
    format: Format | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class BulkReviewRequest(_Strict):
    action: Literal["approve", "reject"]
    filter: BulkFilter
    note: str | None = Field(None, max_length=10_000)
    dry_run: bool = False


class BulkReviewResult(BaseModel):
    dry_run: bool
    matched: int = Field(description="Trajectories matching the filter in a reviewable status.")
    changed: int = Field(description="Trajectories moved (0 on a dry run).")
    skipped_leased: int = Field(description="Matched but held by a live annotation-queue lease: left alone.")
    would_change: int = Field(description="matched - skipped_leased at the time of the request.")


# ---- queue --------------------------------------------------------------------------------------

LeaseSeconds = Annotated[int, Field(DEFAULT_LEASE_SECONDS, ge=10, le=MAX_LEASE_SECONDS)]


class ClaimRequest(_Strict):
    source: str | None = None
    task_type: str | None = None
    format: Format | None = None
    lease_seconds: LeaseSeconds = DEFAULT_LEASE_SECONDS


class ExtendRequest(_Strict):
    lease_seconds: LeaseSeconds = DEFAULT_LEASE_SECONDS


class LeaseRead(BaseModel):
    lease_id: uuid.UUID
    trajectory_id: uuid.UUID
    holder_key_id: str
    claimed_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None


class ClaimedTrajectory(BaseModel):
    id: uuid.UUID
    source: str
    format: str
    task_type: str | None
    status: str
    span_revision: int
    created_at: datetime


class ClaimResult(BaseModel):
    lease: LeaseRead
    trajectory: ClaimedTrajectory


# ---- stats --------------------------------------------------------------------------------------

class KindScores(BaseModel):
    auto_chars: int
    final_chars: int
    agree_chars: int = Field(description="Characters labelled with this kind in both.")
    precision: float | None
    recall: float | None
    f1: float | None
    auto_spans: int
    final_spans: int
    exact_spans: int = Field(description="Automatic spans kept exactly (message, start, end, kind).")


class FormatScores(BaseModel):
    format: str
    trajectories: int
    touched: int
    kinds: dict[str, KindScores]


class AnnotationStats(BaseModel):
    trajectories: int = Field(description="Approved trajectories whose revision 1 is automatic.")
    touched: int = Field(description="Of those, how many annotators changed (latest revision > 1).")
    overall: dict[str, KindScores]
    formats: list[FormatScores]
