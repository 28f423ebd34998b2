"""All SQL for trajectories, their span revisions and idempotency records."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, delete, func, select, text, tuple_
from sqlalchemy.orm import Session

from app.models import IdempotencyRecord, SpanRevision, Trajectory
from contract.spans import Span

_TRAJECTORY_COLUMNS = (
    "id", "source", "external_id", "format", "teacher_model", "task", "task_type", "outcome", "reward", "tags",
    "metadata", "messages", "tools", "raw", "content_sha256", "request_sha256", "complexity", "complexity_score",
    "n_messages", "status", "span_revision",
)
_JSON_COLUMNS = {"metadata": "jsonb", "messages": "jsonb", "tools": "jsonb", "raw": "json", "complexity": "jsonb"}
# One statement per trajectory stores it and its span revision 1 (the CTE inserts the revision only
# when the trajectory row was new).
_INSERT_TRAJECTORY = (
    "WITH t AS (INSERT INTO trajectories (" + ", ".join(_TRAJECTORY_COLUMNS) + ") VALUES ("
    + ", ".join(f"%s::{_JSON_COLUMNS[c]}" if c in _JSON_COLUMNS else "%s" for c in _TRAJECTORY_COLUMNS)
    + ") ON CONFLICT (source, external_id) DO NOTHING RETURNING id) "
    "INSERT INTO span_revisions (trajectory_id, revision, spans, source, author_key_id, reason) "
    "SELECT id, 1, %s::jsonb, %s, %s, %s FROM t RETURNING trajectory_id"
)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _driver(session: Session) -> Any:
    """The psycopg connection under the session's current transaction."""
    return session.connection().connection.driver_connection


def insert_trajectories(session: Session, rows: list[dict[str, Any]], spans: list[list[Span]],
                        span_source: list[str], author_key_id: str | None) -> set[uuid.UUID]:
    """Insert trajectories (row keys as ``_TRAJECTORY_COLUMNS``; ``metadata`` under ``metadata_``; ``raw`` the
    payload's JSON text as received, which the ``json`` column keeps byte for byte) with
    their span revision 1; rows whose (source, external_id) already exists are skipped. Returns the
    ids actually inserted.

    One prepared statement per row, pipelined over a batch (psycopg ``executemany``): no giant query
    text to build and parse, one round trip for the lot. Concurrent inserts of the same key wait for
    the other transaction, so a race resolves to one insert and one skip.
    """
    if not rows:
        return set()
    params = [
        [row["raw"] if c == "raw" else _json(row["metadata_" if c == "metadata" else c]) if c in _JSON_COLUMNS
         else row["metadata_" if c == "metadata" else c] for c in _TRAJECTORY_COLUMNS]
        + [_json(row_spans), source, author_key_id, "ingest"]
        for row, row_spans, source in zip(rows, spans, span_source, strict=True)
    ]
    inserted: set[uuid.UUID] = set()
    with _driver(session).cursor() as cur:
        if len(params) == 1:  # a pipeline costs more than it saves for one statement
            cur.execute(_INSERT_TRAJECTORY, params[0])
            inserted.update(r[0] for r in cur.fetchall())
            return inserted
        cur.executemany(_INSERT_TRAJECTORY, params, returning=True)
        while True:
            row = cur.fetchone()
            if row is not None:
                inserted.add(row[0])
            if not cur.nextset():
                break
    return inserted


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


def current_spans(session: Session, trajectory_id: uuid.UUID, revision: int) -> list[Span]:
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


def claim_idempotency_key(session: Session, key: str, endpoint: str, request_sha256: str, ttl_seconds: int
                          ) -> IdempotencyRecord | None:
    """Reserve ``key`` for this request; return the existing record when it was already used.

    A record older than ``ttl_seconds`` has expired: it is taken over as if it did not exist. A
    concurrent request holding the same key blocks here until the first one commits.
    """
    stmt = text(
        "INSERT INTO idempotency_keys AS r (key, endpoint, request_sha256) VALUES (:key, :endpoint, :digest)"
        " ON CONFLICT (key) DO UPDATE SET endpoint = excluded.endpoint, request_sha256 = excluded.request_sha256,"
        " status_code = NULL, response = NULL, created_at = now()"
        " WHERE r.created_at < now() - make_interval(secs => :ttl) RETURNING r.key")
    params = {"key": key, "endpoint": endpoint, "digest": request_sha256, "ttl": ttl_seconds}
    if session.execute(stmt, params).scalar_one_or_none() is not None:
        return None
    return session.execute(select(IdempotencyRecord).where(IdempotencyRecord.key == key)).scalar_one()


def purge_idempotency_keys(session: Session, ttl_seconds: int, limit: int) -> int:
    result = session.execute(text(
        "DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys"
        " WHERE created_at < now() - make_interval(secs => :ttl) ORDER BY created_at LIMIT :limit)"),
        {"ttl": ttl_seconds, "limit": limit})
    return int(result.rowcount)  # type: ignore[attr-defined]


def raw_text(session: Session, trajectory_id: uuid.UUID) -> str | None:
    """The trajectory's payload exactly as received (the ``json`` column keeps the text)."""
    value = session.execute(text("SELECT raw::text FROM trajectories WHERE id = :id"),
                            {"id": trajectory_id}).scalar_one_or_none()
    return None if value is None else str(value)


def store_idempotent_response(session: Session, key: str, status_code: int, response: dict[str, Any]) -> None:
    record = session.get(IdempotencyRecord, key)
    assert record is not None
    record.status_code = status_code
    record.response = response
    session.flush()
