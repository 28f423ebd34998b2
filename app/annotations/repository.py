"""All SQL for annotation: span revisions (compare-and-set), review transitions, queue leases, stats.

Nothing here commits; every function runs in the caller's transaction. The two statements that
must be race-proof are:

- ``advance_revision``: ``UPDATE trajectories SET span_revision = n+1 … WHERE id = … AND
  span_revision = n``. A second writer holding the same ``n`` blocks on the row, re-checks the
  condition once the first commits, and updates nothing: it loses (412), it never overwrites.
- ``claim``: one statement that picks the oldest pending trajectory without a live lease
  (``FOR UPDATE SKIP LOCKED``, so concurrent claimers pass over each other's rows), closes an
  expired lease of it, and inserts the new lease. A claimer whose snapshot predates a rival's
  commit can still pick the same row; the partial unique index (one open lease per trajectory)
  turns its insert into a no-op, and the caller tries again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Interval, Row, Table, and_, exists, func, insert, literal, select, text, update
from sqlalchemy.orm import Session, aliased

from app.annotations.schemas import BulkFilter
from app.models import AnnotationLease, ReviewEvent, SpanRevision, Trajectory
from contract.complexity import Complexity
from contract.spans import Span

EDITABLE_STATUSES = ("pending", "in_review")

trajectories = cast(Table, Trajectory.__table__)
revisions = cast(Table, SpanRevision.__table__)
reviews = cast(Table, ReviewEvent.__table__)
leases = cast(Table, AnnotationLease.__table__)


def _seconds(value: int) -> Any:
    return literal(timedelta(seconds=value), Interval())


def _live_lease(trajectory_id: Any) -> Any:
    return exists().where(leases.c.trajectory_id == trajectory_id, leases.c.ended_at.is_(None),
                          leases.c.expires_at > func.now())


# ---- span revisions -----------------------------------------------------------------------------

def get_trajectory(session: Session, trajectory_id: uuid.UUID) -> Trajectory | None:
    return session.get(Trajectory, trajectory_id)


def get_revision(session: Session, trajectory_id: uuid.UUID, revision: int) -> SpanRevision | None:
    return session.get(SpanRevision, (trajectory_id, revision))


def advance_revision(session: Session, trajectory_id: uuid.UUID, expected: int,
                     complexity: Complexity) -> bool:
    """Compare-and-set ``span_revision`` from ``expected`` to ``expected + 1`` on an editable trajectory."""
    stmt = (
        update(trajectories)
        .where(trajectories.c.id == trajectory_id, trajectories.c.span_revision == expected,
               trajectories.c.status.in_(EDITABLE_STATUSES))
        .values(span_revision=expected + 1, complexity=complexity, complexity_score=float(complexity["score"]),
                updated_at=func.now())
        .returning(trajectories.c.id)
    )
    return session.execute(stmt).first() is not None


def current_state(session: Session, trajectory_id: uuid.UUID) -> Any:
    """(span_revision, status) as committed now, read after a failed compare-and-set."""
    stmt = select(trajectories.c.span_revision, trajectories.c.status).where(trajectories.c.id == trajectory_id)
    return session.execute(stmt).first()


def insert_revision(session: Session, trajectory_id: uuid.UUID, revision: int, spans: list[Span],
                    author_key_id: str, reason: str | None) -> Row[Any]:
    stmt = (
        insert(revisions)
        .values(trajectory_id=trajectory_id, revision=revision, spans=spans, source="annotator",
                author_key_id=author_key_id, reason=reason)
        .returning(*revisions.c)
    )
    return session.execute(stmt).one()


def list_revisions(session: Session, trajectory_id: uuid.UUID, after: int, limit: int) -> list[Row[Any]]:
    stmt = (
        select(revisions.c.revision, revisions.c.source, revisions.c.author_key_id, revisions.c.reason,
               revisions.c.created_at, func.jsonb_array_length(revisions.c.spans).label("n_spans"))
        .where(revisions.c.trajectory_id == trajectory_id, revisions.c.revision > after)
        .order_by(revisions.c.revision)
        .limit(limit)
    )
    return list(session.execute(stmt))


# ---- review -------------------------------------------------------------------------------------

def lock_trajectory(session: Session, trajectory_id: uuid.UUID) -> Any:
    stmt = (
        select(trajectories.c.id, trajectories.c.status, trajectories.c.span_revision)
        .where(trajectories.c.id == trajectory_id)
        .with_for_update()
    )
    return session.execute(stmt).first()


def set_review(session: Session, trajectory_id: uuid.UUID, *, action: str, from_status: str, to_status: str,
               actor: str, note: str | None, span_revision: int) -> Row[Any]:
    """Move a locked trajectory and record the event; returns the updated review columns."""
    stmt = (
        update(trajectories)
        .where(trajectories.c.id == trajectory_id)
        .values(status=to_status, reviewer_key_id=actor, review_note=note, reviewed_at=func.now(),
                updated_at=func.now())
        .returning(trajectories.c.status, trajectories.c.span_revision, trajectories.c.reviewer_key_id,
                   trajectories.c.review_note, trajectories.c.reviewed_at)
    )
    row = session.execute(stmt).one()
    session.execute(insert(reviews).values(
        trajectory_id=trajectory_id, action=action, from_status=from_status, to_status=to_status,
        actor_key_id=actor, note=note, span_revision=span_revision, bulk=False))
    return row


def list_review_events(session: Session, trajectory_id: uuid.UUID) -> list[Row[Any]]:
    stmt = select(reviews).where(reviews.c.trajectory_id == trajectory_id).order_by(reviews.c.id)
    return list(session.execute(stmt))


def _bulk_conditions(f: BulkFilter) -> list[Any]:
    t = trajectories.c
    conds: list[Any] = [t.status.in_([f.status] if f.status else list(EDITABLE_STATUSES))]
    for column, value in ((t.source, f.source), (t.task_type, f.task_type), (t.teacher_model, f.teacher_model),
                          (t.outcome, f.outcome), (t.format, f.format)):
        if value is not None:
            conds.append(column == value)
    if f.tags:
        conds.append(t.tags.contains(f.tags))
    if f.created_after is not None:
        conds.append(t.created_at >= f.created_after)
    if f.created_before is not None:
        conds.append(t.created_at < f.created_before)
    return conds


def bulk_counts(session: Session, f: BulkFilter) -> tuple[int, int]:
    """(matched, of which under a live lease)."""
    leased = _live_lease(trajectories.c.id)
    stmt = select(func.count(), func.count().filter(leased)).select_from(trajectories).where(*_bulk_conditions(f))
    matched, held = session.execute(stmt).one()
    return int(matched), int(held)


def bulk_review(session: Session, f: BulkFilter, *, action: str, to_status: str, actor: str,
                note: str | None) -> int:
    """Move every matching, unleased trajectory and record one bulk event each; returns how many moved.

    Rows are locked in id order (no deadlock between two bulk requests); a row changed meanwhile
    by someone else is re-checked against the status condition after its lock is granted.
    """
    target = (
        select(trajectories.c.id, trajectories.c.status)
        .where(*_bulk_conditions(f), ~_live_lease(trajectories.c.id))
        .order_by(trajectories.c.id)
        .with_for_update()
        .cte("target")
    )
    moved = (
        update(trajectories)
        .where(trajectories.c.id == target.c.id)
        .values(status=to_status, reviewer_key_id=actor, review_note=note, reviewed_at=func.now(),
                updated_at=func.now())
        .returning(trajectories.c.id, target.c.status.label("from_status"), trajectories.c.span_revision)
        .cte("moved")
    )
    events = insert(reviews).from_select(
        ["trajectory_id", "action", "from_status", "to_status", "actor_key_id", "note", "span_revision", "bulk"],
        select(moved.c.id, literal(action), moved.c.from_status, literal(to_status), literal(actor),
               literal(note), moved.c.span_revision, literal(True)),
    ).returning(reviews.c.id)
    return len(session.execute(events).all())


# ---- queue --------------------------------------------------------------------------------------

_CLAIM = """
WITH candidate AS (
    SELECT t.id FROM trajectories t
    WHERE t.status = 'pending' {filters}
      AND NOT EXISTS (SELECT 1 FROM annotation_leases l
                      WHERE l.trajectory_id = t.id AND l.ended_at IS NULL AND l.expires_at > now())
    ORDER BY t.created_at, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
), expired AS (
    UPDATE annotation_leases SET ended_at = expires_at, end_reason = 'expired'
    WHERE trajectory_id IN (SELECT id FROM candidate) AND ended_at IS NULL AND expires_at <= now()
    RETURNING id
), lease AS (
    INSERT INTO annotation_leases (id, trajectory_id, holder_key_id, claimed_at, expires_at)
    SELECT :lease_id, c.id, :holder, now(), now() + make_interval(secs => :seconds)
    FROM candidate c
    WHERE (SELECT count(*) FROM expired) >= 0  -- closes the expired lease before this insert
    ON CONFLICT (trajectory_id) WHERE ended_at IS NULL DO NOTHING
    RETURNING id, trajectory_id
)
SELECT c.id AS candidate_id, lease.id AS lease_id FROM candidate c LEFT JOIN lease ON lease.trajectory_id = c.id
"""


def claim(session: Session, holder: str, lease_seconds: int, *, source: str | None = None,
          task_type: str | None = None, format: str | None = None) -> tuple[uuid.UUID | None, bool]:
    """One claim attempt: (candidate trajectory id or None when the queue is empty, lease created?).

    ``(id, False)`` means a rival claimed that trajectory between our snapshot and our insert: retry.
    """
    params: dict[str, Any] = {"lease_id": uuid.uuid4(), "holder": holder, "seconds": lease_seconds}
    filters = ""
    for name, value in (("source", source), ("task_type", task_type), ("format", format)):
        if value is not None:
            filters += f" AND t.{name} = :{name}"
            params[name] = value
    row = session.execute(text(_CLAIM.format(filters=filters)), params).first()
    if row is None:
        return None, False
    return row.candidate_id, row.lease_id is not None


def get_lease(session: Session, lease_id: uuid.UUID, *, lock: bool = False) -> Row[Any] | None:
    """The lease with ``expired`` (by the database clock)."""
    stmt = select(leases, (leases.c.expires_at <= func.now()).label("expired")).where(leases.c.id == lease_id)
    if lock:
        stmt = stmt.with_for_update(of=leases)
    return session.execute(stmt).first()


def open_lease_for(session: Session, trajectory_id: uuid.UUID) -> Row[Any] | None:
    stmt = select(leases).where(leases.c.trajectory_id == trajectory_id, leases.c.ended_at.is_(None))
    return session.execute(stmt).first()


def end_lease(session: Session, lease_id: uuid.UUID, reason: str) -> Row[Any]:
    stmt = (update(leases).where(leases.c.id == lease_id)
            .values(ended_at=func.now(), end_reason=reason).returning(*leases.c))
    return session.execute(stmt).one()


def extend_lease(session: Session, lease_id: uuid.UUID, seconds: int) -> Row[Any]:
    stmt = (update(leases).where(leases.c.id == lease_id)
            .values(expires_at=func.now() + _seconds(seconds)).returning(*leases.c))
    return session.execute(stmt).one()


def claimed_trajectory(session: Session, trajectory_id: uuid.UUID) -> Any:
    t = trajectories.c
    stmt = select(t.id, t.source, t.format, t.task_type, t.status, t.span_revision, t.created_at).where(
        t.id == trajectory_id)
    return session.execute(stmt).one()


# ---- stats --------------------------------------------------------------------------------------

def approved_auto_vs_final(session: Session, *, source: str | None, format: str | None
                           ) -> Iterator[tuple[str, list[Span], list[Span], int]]:
    """(format, revision-1 spans, current spans, current revision) of approved, auto-segmented trajectories."""
    first, final = aliased(SpanRevision), aliased(SpanRevision)
    stmt = (
        select(Trajectory.format, first.spans, final.spans, Trajectory.span_revision)
        .join(first, and_(first.trajectory_id == Trajectory.id, first.revision == 1))
        .join(final, and_(final.trajectory_id == Trajectory.id, final.revision == Trajectory.span_revision))
        .where(Trajectory.status == "approved", first.source == "auto")
    )
    if source is not None:
        stmt = stmt.where(Trajectory.source == source)
    if format is not None:
        stmt = stmt.where(Trajectory.format == format)
    for fmt, auto, final_spans, revision in session.execute(stmt.execution_options(yield_per=500)):
        yield fmt, list(auto), list(final_spans), int(revision)
