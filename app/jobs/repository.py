"""Reads for the jobs API (lists, events, workers, datasets) and the one transition the queue lacks: retry.

Everything that moves a job for a worker lives in ``app/jobs/queue.py``; this module holds what the API
needs besides: keyset pages of jobs, a job's event log after a cursor, the worker registry with an
``alive`` flag computed by the database clock, and ``requeue`` (an operator's retry of a failed or
cancelled job, attempts reset). The datasets tables belong to the datasets module; the two functions
at the end are the only code here that reads them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Interval, Row, func, literal, select, text, tuple_, update
from sqlalchemy.orm import Session

from app.jobs import placement, queue
from app.jobs.queue import events, jobs, workers

RETRYABLE_STATUSES = ("failed", "cancelled")


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    kind: str | None = None
    dataset_id: uuid.UUID | None = None


def get_job(session: Session, job_id: uuid.UUID) -> Row[Any] | None:
    return session.execute(select(jobs).where(jobs.c.id == job_id)).first()


def job_status(session: Session, job_id: uuid.UUID) -> str | None:
    return session.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one_or_none()


def list_jobs(session: Session, f: JobFilter, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[Row[Any]]:
    """Newest first, keyset on (created_at, id); each row with ``waiting_reason`` as ``GET /v1/jobs/{id}`` has it."""
    stmt = select(jobs, placement.waiting_reason())
    if f.status is not None:
        stmt = stmt.where(jobs.c.status == f.status)
    if f.kind is not None:
        stmt = stmt.where(jobs.c.kind == f.kind)
    if f.dataset_id is not None:
        stmt = stmt.where(jobs.c.dataset_id == f.dataset_id)
    if after is not None:
        stmt = stmt.where(tuple_(jobs.c.created_at, jobs.c.id) < tuple_(*after))
    return list(session.execute(stmt.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)).all())


def list_events(session: Session, job_id: uuid.UUID, after_id: int, limit: int,
                kinds: Sequence[str] | None = None) -> list[Row[Any]]:
    """The job's events with id > ``after_id``, oldest first."""
    stmt = select(events).where(events.c.job_id == job_id, events.c.id > after_id)
    if kinds:
        stmt = stmt.where(events.c.kind.in_(kinds))
    return list(session.execute(stmt.order_by(events.c.id).limit(limit)).all())


def progress_events(session: Session, job_id: uuid.UUID, after_step: int, limit: int) -> list[dict[str, Any]]:
    """Per-step metrics as stored in progress events (when no metrics file is readable)."""
    step = events.c.data["step"].as_integer()
    rows = session.execute(
        select(events.c.data)
        .where(events.c.job_id == job_id, events.c.kind == "progress", step > after_step)
        .order_by(events.c.id)
        .limit(limit)
    ).scalars()
    return [r for r in rows if isinstance(r, dict)]


def list_workers(session: Session, lease_seconds: float, alive: bool | None = None) -> list[Row[Any]]:
    """Registered workers with ``alive``: a heartbeat within three leases (by the database clock)."""
    window = literal(timedelta(seconds=3 * lease_seconds), Interval())
    is_alive = workers.c.last_heartbeat_at > func.now() - window
    stmt = select(workers, is_alive.label("alive"), jobs.c.status.label("current_job_status")).outerjoin(
        jobs, jobs.c.id == workers.c.current_job_id
    )
    if alive is not None:
        stmt = stmt.where(is_alive if alive else ~is_alive)
    return list(session.execute(stmt.order_by(workers.c.started_at, workers.c.id)).all())


def requeue(session: Session, job_id: uuid.UUID, actor: str) -> Row[Any] | None:
    """Retry a failed or cancelled job: queued again now with attempts reset (its out_dir, and so its
    newest checkpoint, is kept) and no lease (its last attempt's token is gone: the next claim issues a new
    one). None when the job is not in a retryable state."""
    row = session.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(RETRYABLE_STATUSES))
        .values(
            status="queued", attempts=0, cancel_requested=False, run_after=func.now(), lease_owner=None,
            lease_token=None, lease_expires_at=None, finished_at=None, result=None, updated_at=func.now(),
        )
        .returning(*jobs.c)
    ).first()
    if row is not None:
        queue.add_event(session, job_id, "state", "queued again (retry)", {"status": "queued", "by": actor})
        session.execute(select(func.pg_notify(queue.NOTIFY_CHANNEL, str(job_id))))
    return row


# -- the datasets helper's tables (read only) -----------------------------------------------------------------


def dataset_split_counts(session: Session, dataset_id: uuid.UUID) -> dict[str, int] | None:
    """{"train": n, "eval": m} items of a dataset, or None when there is no such dataset."""
    row = session.execute(
        text(
            "SELECT d.id, count(i.position) FILTER (WHERE i.split = 'train') AS train, "
            "count(i.position) FILTER (WHERE i.split = 'eval') AS eval "
            "FROM datasets d LEFT JOIN dataset_items i ON i.dataset_id = d.id WHERE d.id = :id GROUP BY d.id"
        ),
        {"id": dataset_id},
    ).first()
    return None if row is None else {"train": int(row.train), "eval": int(row.eval)}


def dataset_lineage(session: Session, dataset_id: uuid.UUID, items_limit: int) -> dict[str, Any] | None:
    """The dataset's identity and its first ``items_limit`` pinned items (trajectory, span revision, split)."""
    ds = session.execute(
        text("SELECT id, name, content_sha256, n_items, n_train, n_eval, created_at FROM datasets WHERE id = :id"),
        {"id": dataset_id},
    ).first()
    if ds is None:
        return None
    items = session.execute(
        text(
            "SELECT trajectory_id, span_revision, split, content_sha256 FROM dataset_items "
            "WHERE dataset_id = :id ORDER BY position LIMIT :limit"
        ),
        {"id": dataset_id, "limit": items_limit},
    ).all()
    return {"dataset": dict(ds._mapping), "items": [dict(r._mapping) for r in items]}


def dataset_content_hash(session: Session, dataset_id: uuid.UUID) -> str | None:
    return session.execute(text("SELECT content_sha256 FROM datasets WHERE id = :id"), {"id": dataset_id}).scalar()


def succeeded_captures(session: Session, content_sha256: str, job_id: uuid.UUID | None = None) -> list[Row[Any]]:
    """Succeeded capture jobs over datasets with this content hash (one job when ``job_id`` is given), newest
    first, with ``content_sha256`` of their dataset."""
    stmt = (
        select(jobs.c.id, jobs.c.config, jobs.c.result, jobs.c.finished_at, text("d.content_sha256"))
        .select_from(jobs.join(text("datasets d"), text("d.id = jobs.dataset_id")))
        .where(jobs.c.kind == "capture", jobs.c.status == "succeeded", text("d.content_sha256 = :hash"))
        .order_by(jobs.c.finished_at.desc(), jobs.c.id.desc())
    )
    if job_id is not None:
        stmt = stmt.where(jobs.c.id == job_id)
    return cast(list[Row[Any]], list(session.execute(stmt, {"hash": content_sha256}).all()))
