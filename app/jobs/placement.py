"""Where a job can run: what its resources ask of a worker, and why no live worker can run it.

A worker advertises its GPUs (``workers.devices``, one entry per GPU) and its launchers
(``workers.launchers``: ``inprocess``, ``torchrun``, ``slurm``). A job's ``config.resources`` says which
launcher it will use (as ``worker.launchers.choose_launcher`` picks it: explicit, else Slurm for
``nodes > 1``, torchrun for ``gpus > 1``, else in-process) and how many GPUs the claiming worker itself
must have; Postgres keeps both in generated columns (``jobs.needs_launcher``, ``jobs.needs_gpus``, see
``app.models.job``), so checking a queued job costs two comparisons:

| resources | launcher | GPUs on the worker |
| --- | --- | --- |
| ``device: "cpu"``, ``gpus: K`` | in-process (K = 1) or torchrun (K CPU processes) | 0 |
| ``device: "auto"``, ``gpus: 1`` | in-process (CUDA when there is one, else the CPU) | 0 |
| ``device: "cuda"`` or ``"auto"``, ``gpus: K`` | in-process or torchrun | K |
| ``nodes > 1`` or ``launcher: "slurm"`` | slurm (the allocation brings the GPUs) | 0 |

A value of the wrong JSON type counts as its default. ``queue.claim`` filters on ``fits`` in its one
statement; ``waiting_reason`` explains a queued job that no live worker fits, a column computed in the SELECT
that reads the job (``read_job``) or lists jobs (``app.jobs.repository.list_jobs``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from sqlalchemy import ColumnElement, Connection, Label, Row, Table, and_, case, func, null, or_, select
from sqlalchemy.orm import Session

from app.models.job import Job
from app.models.worker import Worker

LAUNCHERS = ("inprocess", "torchrun", "slurm")

jobs = cast(Table, Job.__table__)
workers = cast(Table, Worker.__table__)


@dataclass(frozen=True)
class Capabilities:
    """What a claiming worker can run: the ``gpus`` it has and the ``launchers`` it can start."""

    gpus: int = 0
    launchers: tuple[str, ...] = ("inprocess",)


class Needs(NamedTuple):
    launcher: ColumnElement[Any]  # 'inprocess' | 'torchrun' | 'slurm'
    gpus: ColumnElement[Any]  # GPUs the claiming worker itself must have


def job_needs(table: Any) -> Needs:
    """What the jobs of ``table`` (``jobs`` or an alias of it) ask of the worker that claims them."""
    return Needs(table.c.needs_launcher, table.c.needs_gpus)


def fits(needs: Needs, can_run: Capabilities) -> ColumnElement[bool]:
    """The claim's filter: the worker has the GPUs and the launcher (in-process needs none)."""
    return and_(needs.gpus <= can_run.gpus, or_(needs.launcher == "inprocess", needs.launcher.in_(can_run.launchers)))


def waiting_reason() -> Label[Any]:
    """The ``waiting_reason`` column of a SELECT over ``jobs``: why no live worker can run the job ("no live
    worker has 4 GPUs (largest: 1)"), None when one can or when the job is not queued. Live: a heartbeat within
    three of the worker's own leases. A subquery correlated with the outer ``jobs``, so a list computes it
    per row in its one statement."""
    w = workers
    needs = job_needs(jobs)
    window = func.make_interval(0, 0, 0, 0, 0, 0, 3 * func.coalesce(w.c.lease_seconds, 60.0))
    takes = w.c.kinds.has_key(jobs.c.kind)
    launches = or_(needs.launcher == "inprocess", w.c.launchers.has_key(needs.launcher))
    gpus = func.jsonb_array_length(w.c.devices)

    def count(*where: Any) -> Any:
        return func.count().filter(and_(*where)) if where else func.count()

    reason = (
        select(case(
            (count() == 0, "no live worker"),
            (count(takes) == 0, func.format("no live worker takes %s jobs", jobs.c.kind)),
            (count(takes, launches, gpus >= needs.gpus) > 0, null()),
            (count(takes, launches) == 0, func.format("no live worker has the %s launcher", needs.launcher)),
            (needs.gpus == 1, "no live worker has a GPU"),
            else_=func.format("no live worker has %s GPUs (largest: %s)", needs.gpus,
                              func.max(gpus).filter(and_(takes, launches))),
        ))
        .where(w.c.last_heartbeat_at > func.now() - window)
        .correlate(jobs)
        .scalar_subquery()
    )
    return case((jobs.c.status == "queued", reason), else_=null()).label("waiting_reason")


def read_job(conn: Connection | Session, job_id: uuid.UUID) -> Row[Any] | None:
    """The job row plus ``waiting_reason`` (see ``waiting_reason``)."""
    return conn.execute(select(jobs, waiting_reason()).where(jobs.c.id == job_id)).first()
