"""Response shapes of the jobs and workers API (the job *configs* are in ``contract/job_config.py``).

``job_read`` turns a ``jobs`` row into ``JobRead``: the trainer's raw progress row
(``loss_reason``, ``weight_action``, …) is presented as ``{step, total, tokens_per_s, eta_s, losses,
weights, lr, grad_norm}``; keys a handler adds beyond those are kept as they are. ``waiting_reason``
comes with rows that select ``app.jobs.placement.waiting_reason()`` (one job, and lists), else it is null.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ArtifactKind = Literal["checkpoint", "model", "report", "plot", "metrics", "log", "input", "other"]


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="allow")

    step: int | None = None
    total: int | None = None
    tokens_per_s: float | None = Field(None, description="Supervised tokens per second (last step).")
    eta_s: float | None = Field(None, description="Seconds left at the recent step rate.")
    losses: dict[str, float | None] | None = Field(None, description="total, reason, action, curriculum.")
    weights: dict[str, float | None] | None = Field(None, description="Effective span weights (reason, action).")
    lr: float | None = None
    grad_norm: float | None = None


class JobLease(BaseModel):
    owner: str | None = Field(None, description="The worker running the job.")
    expires_at: datetime | None = None
    heartbeat_at: datetime | None = None


class JobLinks(BaseModel):
    events: str
    stream: str
    metrics: str
    artifacts: str
    lineage: str


class JobRead(BaseModel):
    id: uuid.UUID
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    dataset_id: uuid.UUID | None
    priority: int
    config: dict[str, Any]
    attempts: int
    max_attempts: int
    cancel_requested: bool
    progress: JobProgress | None
    lease: JobLease
    waiting_reason: str | None = Field(
        None, description="Why a queued job waits: no live worker can run it (e.g. 'no live worker has 4 GPUs "
        "(largest: 1)'); null when one can (it may be busy), and for jobs that are not queued.")
    error: str | None = Field(None, description="The last failure (a traceback for a crashed handler).")
    result: dict[str, Any] | None
    run_after: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: JobLinks


class JobPage(BaseModel):
    items: list[JobRead]
    next_cursor: str | None


class EventRead(BaseModel):
    id: int
    ts: datetime
    kind: Literal["state", "progress", "log", "metric"]
    level: str
    message: str
    data: dict[str, Any] | None


class EventPage(BaseModel):
    items: list[EventRead]
    next_cursor: str | None = Field(description="The last event id; pass it back as cursor (also when polling).")


class MetricsPage(BaseModel):
    job_id: uuid.UUID
    source: Literal["file", "events", "none"] = Field(
        description="'file': the run's metrics.jsonl; 'events': progress events (no metrics file readable here).")
    items: list[dict[str, Any]] = Field(description="One row per optimizer step, in step order.")
    evals: list[dict[str, Any]] = Field(description="Intermediate evaluations ({step, eval}) in the same range.")
    next_after_step: int | None = Field(description="Pass back as after_step for the rows after these.")


class WorkerRead(BaseModel):
    id: str
    host: str
    pid: int
    devices: list[dict[str, Any]] = Field(description="Its GPUs as it advertises them (one entry each).")
    kinds: list[str]
    launchers: list[str] = Field(default_factory=list, description="inprocess, torchrun, slurm: what it can start.")
    current_job_id: uuid.UUID | None
    current_job_status: str | None
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool = Field(description="Heartbeat within three leases (worker_lease_seconds).")


class WorkerPage(BaseModel):
    items: list[WorkerRead]


class ArtifactRead(BaseModel):
    path: str = Field(description="Relative to the job's folder; download at /v1/jobs/{id}/artifacts/{path}.")
    size: int
    kind: ArtifactKind
    modified_at: datetime
    sha256: str | None = None


class ArtifactList(BaseModel):
    job_id: uuid.UUID
    items: list[ArtifactRead]
    total_bytes: int


_LOSS_KEYS = {"loss": "total", "loss_reason": "reason", "loss_action": "action", "loss_curriculum": "curriculum"}
_WEIGHT_KEYS = {"weight_reason": "reason", "weight_action": "action"}


def progress_view(raw: dict[str, Any] | None) -> JobProgress | None:
    if not raw:
        return None
    rest = dict(raw)
    losses = {name: rest.pop(k) for k, name in _LOSS_KEYS.items() if k in rest}
    weights = {name: rest.pop(k) for k, name in _WEIGHT_KEYS.items() if k in rest}
    total = rest.pop("total", None)
    total_steps = rest.pop("total_steps", None)
    return JobProgress(**rest, total=total if total is not None else total_steps,
                       losses=losses or None, weights=weights or None)


def job_read(row: Any) -> JobRead:
    base = f"/v1/jobs/{row.id}"
    return JobRead(
        id=row.id, kind=row.kind, status=row.status, dataset_id=row.dataset_id, priority=row.priority,
        config=row.config or {}, attempts=row.attempts, max_attempts=row.max_attempts,
        cancel_requested=row.cancel_requested, progress=progress_view(row.progress),
        lease=JobLease(owner=row.lease_owner, expires_at=row.lease_expires_at, heartbeat_at=row.heartbeat_at),
        waiting_reason=getattr(row, "waiting_reason", None), error=row.error, result=row.result,
        run_after=row.run_after, created_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at, updated_at=row.updated_at,
        links=JobLinks(events=f"{base}/events", stream=f"{base}/events/stream", metrics=f"{base}/metrics",
                       artifacts=f"{base}/artifacts", lineage=f"{base}/lineage"),
    )
