"""The Postgres job queue: every statement that moves a job or a worker row lives here.

Each function takes a SQLAlchemy ``Connection`` or ``Session`` (both work: only Core statements
are executed) and runs inside the caller's transaction; none commits. A job is claimed with one
``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)``, so two workers never get the same job,
and held through a lease that only its owner (``lease_owner``) can renew or settle: once a lease
has expired, another worker may claim the job again and the old owner's writes are refused.

Fencing: each claim issues a fresh ``lease_token``. Every statement of an attempt (renewal, progress,
events, the final state) takes it as ``token=`` and matches ``lease_token = :token`` (a write whose
attempt is over changes nothing and says so: ``ok=False``, ``False`` or ``None``). The worker always
passes it; without it only the owner is checked (tools and tests that drive the queue by hand).

Capabilities: a claim given ``Capabilities`` (the worker's GPU count and launchers) picks, in the same
one statement, only jobs whose ``config.resources`` it can run (``app.jobs.placement.job_needs``).

Attempts: ``claim`` counts one attempt. ``fail_or_retry`` requeues with an exponential backoff
(``2**attempts`` seconds, capped at ``BACKOFF_CAP_SECONDS``) until ``max_attempts`` is reached.
``release`` (graceful shutdown) hands the job back at once and gives the attempt back, so a
SIGTERM is never counted as a failure. A reclaimed job whose attempts are used up is failed
instead of run (its worker died on the last attempt); one whose cancel was requested is cancelled.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, cast

from sqlalchemy import Connection, Interval, Row, Table, and_, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from app.jobs.placement import Capabilities, fits, job_needs
from app.models.job import Job, JobEvent
from app.models.worker import Worker

Executor = Connection | Session
FinalStatus = Literal["succeeded", "failed", "cancelled"]
EventKind = Literal["state", "progress", "log", "metric"]

NOTIFY_CHANNEL = "distillery_jobs"
BACKOFF_CAP_SECONDS = 600

jobs = cast(Table, Job.__table__)
events = cast(Table, JobEvent.__table__)
workers = cast(Table, Worker.__table__)

_now = func.now


@dataclass(frozen=True)
class HeartbeatResult:
    ok: bool  # False: the lease was lost (expired and reclaimed, or the job settled by someone else)
    cancel_requested: bool


def _seconds(value: float) -> Any:
    return literal(timedelta(seconds=value), Interval())


def enqueue(
    conn: Executor,
    kind: str,
    config: dict[str, Any],
    *,
    dataset_id: uuid.UUID | None = None,
    priority: int = 0,
    max_attempts: int = 3,
) -> uuid.UUID:
    """Queue a job and NOTIFY waiting workers (delivered when the caller's transaction commits)."""
    job_id = uuid.uuid4()
    conn.execute(
        insert(jobs).values(
            id=job_id, kind=kind, config=config, dataset_id=dataset_id, priority=priority,
            max_attempts=max_attempts,
            # clock_timestamp(): jobs queued in one transaction keep their order (now() would tie).
            created_at=func.clock_timestamp(),
        )
    )
    add_event(conn, job_id, "state", "queued", {"priority": priority})
    conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(job_id))))
    return job_id


def _settle_dead_leases(conn: Executor) -> None:
    """Expired leases that must not run again: attempts used up → failed; cancel asked → cancelled."""
    j = jobs.alias("j")  # not correlated with the UPDATE's own "jobs"
    doomed = (
        select(j.c.id)
        .where(
            j.c.status == "running",
            j.c.lease_expires_at < _now(),
            or_(j.c.attempts >= j.c.max_attempts, j.c.cancel_requested),
        )
        .with_for_update(skip_locked=True)
    )
    cancelled = jobs.c.cancel_requested
    rows = conn.execute(
        update(jobs)
        .where(jobs.c.id.in_(doomed))
        .values(
            status=case((cancelled, "cancelled"), else_="failed"),
            error=case(
                (cancelled, jobs.c.error),
                else_=func.concat_ws(
                    "\n", jobs.c.error,
                    func.concat("lease expired on the last attempt (worker ", jobs.c.lease_owner, " lost)"),
                ),
            ),
            lease_expires_at=None, finished_at=_now(), updated_at=_now(),
        )
        .returning(jobs.c.id, jobs.c.status, jobs.c.lease_owner)
    ).all()
    for row in rows:
        message = "cancelled (worker lost)" if row.status == "cancelled" else "failed: lease expired, no attempt left"
        add_event(conn, row.id, "state", message, {"status": row.status, "worker": row.lease_owner}, level="warning")


def claim(conn: Executor, worker_id: str, lease_seconds: float, kinds: list[str] | None = None,
          can_run: Capabilities | None = None) -> Row[Any] | None:
    """Take the best runnable job (queued and due, or running with an expired lease) of ``kinds`` that
    ``can_run`` fits (None: any), and lease it under a fresh ``lease_token``.

    Returns the job row (all columns, ``attempts`` already counting this attempt) or None.
    """
    _settle_dead_leases(conn)
    j = jobs.alias("j")  # not correlated with the UPDATE's own "jobs"
    runnable = or_(
        and_(j.c.status == "queued", j.c.run_after <= _now()),
        and_(
            j.c.status == "running",
            j.c.lease_expires_at < _now(),
            j.c.attempts < j.c.max_attempts,
            ~j.c.cancel_requested,
        ),
    )
    candidates = select(j.c.id).where(runnable)
    if kinds is not None:
        candidates = candidates.where(j.c.kind.in_(kinds))
    if can_run is not None:
        candidates = candidates.where(fits(job_needs(j), can_run))
    pick = (
        candidates.order_by(j.c.priority.desc(), j.c.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = conn.execute(
        update(jobs)
        .where(jobs.c.id == pick)
        .values(
            status="running", attempts=jobs.c.attempts + 1, lease_owner=worker_id, lease_token=uuid.uuid4(),
            lease_expires_at=_now() + _seconds(lease_seconds), heartbeat_at=_now(),
            started_at=func.coalesce(jobs.c.started_at, _now()), updated_at=_now(),
        )
        .returning(*jobs.c)
    ).first()
    if row is not None:
        add_event(conn, row.id, "state", f"running on {worker_id} (attempt {row.attempts}/{row.max_attempts})",
                  {"status": "running", "worker": worker_id, "attempt": row.attempts})
    return row


def _held(job_id: uuid.UUID, worker_id: str | None, token: uuid.UUID | None) -> Any:
    """The job is running under this attempt's lease (the token when given; the owner when given)."""
    held = [jobs.c.id == job_id, jobs.c.status == "running"]
    if worker_id is not None:
        held.append(jobs.c.lease_owner == worker_id)
    if token is not None:
        held.append(jobs.c.lease_token == token)
    return and_(*held)


def heartbeat(
    conn: Executor,
    job_id: uuid.UUID,
    worker_id: str,
    lease_seconds: float,
    progress: dict[str, Any] | None = None,
    *,
    token: uuid.UUID | None = None,
) -> HeartbeatResult:
    """Renew the lease (its attempt only) and store the latest progress; reports a requested cancel."""
    values: dict[str, Any] = {
        "lease_expires_at": _now() + _seconds(lease_seconds), "heartbeat_at": _now(), "updated_at": _now(),
    }
    if progress is not None:
        values["progress"] = progress
    row = conn.execute(
        update(jobs).where(_held(job_id, worker_id, token)).values(**values).returning(jobs.c.cancel_requested)
    ).first()
    if row is None:
        return HeartbeatResult(ok=False, cancel_requested=False)
    return HeartbeatResult(ok=True, cancel_requested=bool(row.cancel_requested))


def set_progress(
    conn: Executor, job_id: uuid.UUID, worker_id: str, reports: list[dict[str, Any]], *, token: uuid.UUID | None = None
) -> HeartbeatResult:
    """Store progress reports (its attempt only): the last one in ``jobs.progress``, each as an event.

    Reports a requested cancel like ``heartbeat``; ``ok=False`` (nothing stored) when the lease was lost.
    """
    if not reports:
        raise ValueError("set_progress() needs at least one report")
    row = conn.execute(
        update(jobs)
        .where(_held(job_id, worker_id, token))
        .values(progress=reports[-1], updated_at=_now())
        .returning(jobs.c.cancel_requested)
    ).first()
    if row is None:
        return HeartbeatResult(ok=False, cancel_requested=False)
    conn.execute(insert(events), [
        {"job_id": job_id, "kind": "progress", "message": "progress", "data": report, "level": "info"}
        for report in reports
    ])
    return HeartbeatResult(ok=True, cancel_requested=bool(row.cancel_requested))


def finish(
    conn: Executor,
    job_id: uuid.UUID,
    worker_id: str,
    status: FinalStatus,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    *,
    token: uuid.UUID | None = None,
) -> bool:
    """Settle a running job the attempt holds; False (nothing written) when its lease was lost."""
    if status not in ("succeeded", "failed", "cancelled"):
        raise ValueError(f"finish() takes a final status, not {status!r}")
    values: dict[str, Any] = {
        "status": status, "result": result, "lease_expires_at": None, "finished_at": _now(), "updated_at": _now(),
    }
    if error is not None:
        values["error"] = error
    held = _held(job_id, worker_id, token)
    done = conn.execute(update(jobs).where(held).values(**values).returning(jobs.c.id)).first()
    if done is not None:
        add_event(conn, job_id, "state", status, {"status": status},
                  level="error" if status == "failed" else "info")
    return done is not None


def backoff_seconds(attempts: int) -> int:
    """Wait before the next attempt: 2, 4, 8, … seconds, capped."""
    return int(min(2 ** max(attempts, 0), BACKOFF_CAP_SECONDS))


def fail_or_retry(conn: Executor, job_id: uuid.UUID, worker_id: str, error: str, *,
                  token: uuid.UUID | None = None) -> str | None:
    """Record a failed attempt: requeue with backoff while attempts remain, else fail.

    Returns the new status ('queued', 'failed', or 'cancelled' when a cancel was pending), or None
    when the lease was lost.
    """
    row = conn.execute(
        select(jobs.c.attempts, jobs.c.max_attempts, jobs.c.cancel_requested)
        .where(_held(job_id, worker_id, token))
        .with_for_update()
    ).first()
    if row is None:
        return None
    if row.attempts >= row.max_attempts or row.cancel_requested:
        status: FinalStatus = "cancelled" if row.cancel_requested else "failed"
        finish(conn, job_id, worker_id, status, error=error, token=token)
        return status
    delay = backoff_seconds(row.attempts)
    conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(
            status="queued", error=error, lease_owner=None, lease_token=None, lease_expires_at=None,
            run_after=_now() + _seconds(delay), updated_at=_now(),
        )
    )
    add_event(conn, job_id, "state", f"attempt {row.attempts} failed; retry in {delay}s",
              {"status": "queued", "retry_in_s": delay}, level="warning")
    return "queued"


def release(conn: Executor, job_id: uuid.UUID, worker_id: str, reason: str = "worker shutting down", *,
            token: uuid.UUID | None = None) -> str | None:
    """Hand a running job back (graceful stop): queued again at once, the attempt given back.

    A job whose cancel was requested is cancelled instead. Returns the new status, or None when
    the lease was already lost.
    """
    row = conn.execute(
        update(jobs)
        .where(_held(job_id, worker_id, token))
        .values(
            status=case((jobs.c.cancel_requested, "cancelled"), else_="queued"),
            attempts=case((jobs.c.cancel_requested, jobs.c.attempts), else_=func.greatest(jobs.c.attempts - 1, 0)),
            lease_owner=None, lease_token=None, lease_expires_at=None, run_after=_now(), updated_at=_now(),
            finished_at=case((jobs.c.cancel_requested, _now()), else_=None),
        )
        .returning(jobs.c.status)
    ).first()
    if row is None:
        return None
    add_event(conn, job_id, "state", f"handed back: {reason}" if row.status == "queued" else "cancelled",
              {"status": row.status, "worker": worker_id})
    if row.status == "queued":
        conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(job_id))))
    return str(row.status)


def request_cancel(conn: Executor, job_id: uuid.UUID) -> str | None:
    """Cancel a job: a queued one at once, a running one by raising its flag (its worker stops it).

    Returns the job's status afterwards ('cancelled', 'running' with the flag set, or the final
    status it already had), or None when there is no such job.
    """
    row = conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status.in_(("queued", "running")))
        .values(
            status=case((jobs.c.status == "queued", "cancelled"), else_=jobs.c.status),
            cancel_requested=True,
            finished_at=case((jobs.c.status == "queued", _now()), else_=None),
            updated_at=_now(),
        )
        .returning(jobs.c.status)
    ).first()
    if row is not None:
        message = "cancelled" if row.status == "cancelled" else "cancel requested"
        add_event(conn, job_id, "state", message, {"status": row.status})
        return str(row.status)
    return conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one_or_none()


def add_event(
    conn: Executor,
    job_id: uuid.UUID,
    kind: EventKind,
    message: str,
    data: dict[str, Any] | None = None,
    level: str = "info",
    *,
    token: uuid.UUID | None = None,
) -> bool:
    """Append to the job's event log (state changes, progress, log lines, metrics).

    With ``token``: only while that attempt holds the lease (one ``INSERT … SELECT … WHERE EXISTS``);
    False when refused.
    """
    if token is None:
        conn.execute(insert(events).values(job_id=job_id, kind=kind, message=message, data=data, level=level))
        return True
    row = select(literal(job_id), literal(kind), literal(message), literal(data, events.c.data.type),
                 literal(level)).where(select(jobs.c.id).where(_held(job_id, None, token)).exists())
    done = conn.execute(insert(events).from_select(["job_id", "kind", "message", "data", "level"], row)
                        .returning(events.c.id)).first()
    return done is not None


# -- worker registry ---------------------------------------------------------------------------------------


def register_worker(
    conn: Executor, worker_id: str, *, host: str, pid: int, devices: list[dict[str, Any]], kinds: list[str],
    launchers: Sequence[str] = ("inprocess",), lease_seconds: float | None = None,
) -> None:
    """Insert or refresh this worker's row: what it takes (kinds), has (devices: one per GPU) and starts
    (launchers), and its lease (it counts as live for three of them after each heartbeat)."""
    values = {"devices": devices, "kinds": kinds, "launchers": list(launchers), "lease_seconds": lease_seconds}
    stmt = pg_insert(workers).values(id=worker_id, host=host, pid=pid, **values)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[workers.c.id],
            set_={**values, "last_heartbeat_at": _now(), "current_job_id": None},
        )
    )


def worker_heartbeat(conn: Executor, worker_id: str, current_job_id: uuid.UUID | None) -> None:
    """Mark the worker alive and record what it is running."""
    conn.execute(
        update(workers).where(workers.c.id == worker_id).values(last_heartbeat_at=_now(), current_job_id=current_job_id)
    )


def remove_worker(conn: Executor, worker_id: str) -> None:
    conn.execute(delete(workers).where(workers.c.id == worker_id))


def prune_workers(conn: Executor, older_than_seconds: float) -> int:
    """Forget workers silent for longer than ``older_than_seconds`` (killed processes); returns how many."""
    stale = workers.c.last_heartbeat_at < _now() - _seconds(older_than_seconds)
    return len(conn.execute(delete(workers).where(stale).returning(workers.c.id)).all())
