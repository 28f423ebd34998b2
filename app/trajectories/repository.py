"""All SQL for trajectories, their span revisions and idempotency records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import IdempotencyRecord, SpanRevision, Trajectory


def insert_trajectories(session: Session, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Multi-row insert; rows whose (source, external_id) already exists are skipped.

    Returns the ids actually inserted. Concurrent inserts of the same key wait for the other
    transaction, so a race resolves to one insert and one skip.
    """
    if not rows:
        return set()
    stmt = (
        insert(Trajectory)
        .on_conflict_do_nothing(index_elements=["source", "external_id"])
        .returning(Trajectory.id)
    )
    return set(session.execute(stmt, rows).scalars().all())


def insert_span_revisions(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(SpanRevision), rows)


def find_by_external_ids(session: Session, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Row[Any]]:
    if not keys:
        return {}
    stmt = (
        select(
            Trajectory.id, Trajectory.source, Trajectory.external_id, Trajectory.request_sha256,
            Trajectory.span_revision, Trajectory.n_messages, Trajectory.content_sha256,
            func.jsonb_array_length(SpanRevision.spans).label("n_spans"),
        )
        .join(SpanRevision, (SpanRevision.trajectory_id == Trajectory.id)
              & (SpanRevision.revision == Trajectory.span_revision))
        .where(tuple_(Trajectory.source, Trajectory.external_id).in_(list(keys)))
    )
    return {(r.source, r.external_id): r for r in session.execute(stmt)}


def get(session: Session, trajectory_id: uuid.UUID) -> Trajectory | None:
    return session.get(Trajectory, trajectory_id)


def current_spans(session: Session, trajectory_id: uuid.UUID, revision: int) -> list[dict[str, Any]]:
    row = session.get(SpanRevision, (trajectory_id, revision))
    return list(row.spans) if row else []


@dataclass
class ListFilter:
    source: str | None = None
    teacher_model: str | None = None
    task_type: str | None = None
    outcome: str | None = None
    status: str | None = None
    format: str | None = None
    tags: list[str] | None = None
    complexity_min: float | None = None
    complexity_max: float | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def list_page(
    session: Session, f: ListFilter, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[Trajectory]:
    """Newest first, keyset-paginated on (created_at, id)."""
    stmt = select(Trajectory)
    for column, value in (
        (Trajectory.source, f.source), (Trajectory.teacher_model, f.teacher_model),
        (Trajectory.task_type, f.task_type), (Trajectory.outcome, f.outcome),
        (Trajectory.status, f.status), (Trajectory.format, f.format),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if f.tags:
        stmt = stmt.where(Trajectory.tags.contains(f.tags))
    if f.complexity_min is not None:
        stmt = stmt.where(Trajectory.complexity_score >= f.complexity_min)
    if f.complexity_max is not None:
        stmt = stmt.where(Trajectory.complexity_score <= f.complexity_max)
    if f.created_after is not None:
        stmt = stmt.where(Trajectory.created_at >= f.created_after)
    if f.created_before is not None:
        stmt = stmt.where(Trajectory.created_at < f.created_before)
    if after is not None:
        stmt = stmt.where(tuple_(Trajectory.created_at, Trajectory.id) < tuple_(*after))
    stmt = stmt.order_by(Trajectory.created_at.desc(), Trajectory.id.desc()).limit(limit)
    return list(session.execute(stmt).scalars().all())


def delete_trajectory(session: Session, trajectory_id: uuid.UUID) -> bool:
    result = session.execute(delete(Trajectory).where(Trajectory.id == trajectory_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def count(session: Session) -> int:
    return int(session.execute(select(func.count()).select_from(Trajectory)).scalar_one())


def claim_idempotency_key(session: Session, key: str, endpoint: str, request_sha256: str) -> IdempotencyRecord | None:
    """Reserve ``key`` for this request; return the existing record when it was already used.

    A concurrent request holding the same key blocks here until the first one commits.
    """
    stmt = (
        insert(IdempotencyRecord)
        .values(key=key, endpoint=endpoint, request_sha256=request_sha256)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(IdempotencyRecord.key)
    )
    if session.execute(stmt).scalar_one_or_none() is not None:
        return None
    return session.execute(select(IdempotencyRecord).where(IdempotencyRecord.key == key)).scalar_one()


def store_idempotent_response(session: Session, key: str, status_code: int, response: dict[str, Any]) -> None:
    record = session.get(IdempotencyRecord, key)
    assert record is not None
    record.status_code = status_code
    record.response = response
    session.flush()
