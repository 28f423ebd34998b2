"""Rules of the jobs API: submit (validated, then queued), read, cancel, retry, metrics, artifacts, lineage.

Services never commit: the request's session does, so a job is queued (and its NOTIFY sent) only when
the answer says so. State changes go through ``app/jobs/queue.py`` (cancel) or ``repository.requeue``
(retry); a transition that is not allowed answers 409 ``invalid_transition`` with the current status.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import Conflict, NotFound
from app.jobs import artifacts, placement, queue
from app.jobs import repository as repo
from app.jobs.validation import validate_submission
from contract.rundir import FINAL, RunDir, checkpoint_metas, read_metrics


def get_or_404(session: Session, job_id: uuid.UUID) -> Row[Any]:
    """The job, with ``waiting_reason`` when it is queued and no live worker can run it."""
    row = placement.read_job(session, job_id)
    if row is None:
        raise NotFound(f"No job {job_id}.", code="job_not_found")
    return row


def submit(session: Session, body: Any, settings: Settings, actor: str) -> Row[Any]:
    """Validate a submission (see ``app/jobs/validation.py``) and queue it."""
    job = validate_submission(session, body, settings)
    job_id = queue.enqueue(session, job.kind, job.config, dataset_id=job.dataset_id, priority=job.priority,
                           max_attempts=job.max_attempts)
    queue.add_event(session, job_id, "log", f"submitted by {actor}", {"by": actor})
    return get_or_404(session, job_id)


def _invalid_transition(action: str, row: Row[Any]) -> Conflict:
    return Conflict(f"Cannot {action} a job that is {row.status}.", code="invalid_transition",
                    current_status=row.status)


def cancel(session: Session, job_id: uuid.UUID) -> Row[Any]:
    """Queued → cancelled at once; running → cancel requested (its worker stops it at the next step).
    Cancelling a cancelled job changes nothing; a finished one is a 409."""
    status = queue.request_cancel(session, job_id)
    if status is None:
        raise NotFound(f"No job {job_id}.", code="job_not_found")
    row = get_or_404(session, job_id)
    if status in ("succeeded", "failed"):
        raise _invalid_transition("cancel", row)
    return row


def retry(session: Session, job_id: uuid.UUID, actor: str) -> Row[Any]:
    """Failed or cancelled → queued, attempts reset; anything else is a 409."""
    if repo.requeue(session, job_id, actor) is None:
        raise _invalid_transition("retry", get_or_404(session, job_id))
    return get_or_404(session, job_id)  # with its waiting_reason, like the submit answer


def metrics(session: Session, settings: Settings, job_id: uuid.UUID, after_step: int, limit: int) -> dict[str, Any]:
    """Per-step metrics from the run's metrics.jsonl, else from the progress events."""
    get_or_404(session, job_id)
    source = "file"
    try:
        rows, evals = read_metrics(RunDir(settings.job_dir(job_id)).metrics, after_step, limit)
    except FileNotFoundError:
        rows, evals, source = repo.progress_events(session, job_id, after_step, limit), [], "events"
        if not rows and after_step == 0:
            source = "none"
    return {"job_id": job_id, "source": source, "items": rows, "evals": evals,
            "next_after_step": rows[-1]["step"] if len(rows) == limit else None}


def list_artifacts(session: Session, settings: Settings, job_id: uuid.UUID, prefix: str | None,
                   with_sha256: bool) -> dict[str, Any]:
    get_or_404(session, job_id)
    items = artifacts.list_artifacts(settings.job_dir(job_id), prefix=prefix, with_sha256=with_sha256)
    return {"job_id": job_id, "items": items, "total_bytes": sum(i["size"] for i in items)}


def artifact_path(session: Session, settings: Settings, job_id: uuid.UUID, rel: str) -> Path:
    get_or_404(session, job_id)
    return artifacts.resolve_artifact(settings.job_dir(job_id), rel)


def lineage(session: Session, settings: Settings, job_id: uuid.UUID, items_limit: int) -> dict[str, Any]:
    """Where a job's model came from: its config, the dataset snapshot and its pinned items, the code and
    data hashes its checkpoints recorded, and the model artifacts it produced."""
    row = get_or_404(session, job_id)
    root = settings.job_dir(job_id)
    found = repo.dataset_lineage(session, row.dataset_id, items_limit + 1) if row.dataset_id else None
    dataset = items = None
    if found is not None:
        dataset, items = found["dataset"], found["items"]
    checkpoints = checkpoint_metas(root)
    final = [a["path"] for a in artifacts.list_artifacts(root, prefix=FINAL)]
    config = row.config or {}
    base = f"/v1/datasets/{row.dataset_id}" if row.dataset_id else None
    return {
        "job": {"id": row.id, "kind": row.kind, "status": row.status, "config": config,
                "created_at": row.created_at, "finished_at": row.finished_at, "attempts": row.attempts},
        "dataset": None if dataset is None else {**dataset, "url": base},
        "dataset_id": row.dataset_id,
        "items": None if items is None else items[:items_limit],
        "items_truncated": bool(items is not None and len(items) > items_limit),
        "items_url": f"{base}/items" if base else None,
        "models": {
            "student_model": config.get("student_model"),
            "teacher_model": config.get("teacher_model"),
            "final": final,
            "final_dir": FINAL if final else None,
            "checkpoints": checkpoints,
        },
        "trained_on": {  # from the newest checkpoint's meta.json: what the trainer actually read
            "records_sha256": checkpoints[-1].get("dataset_hash") if checkpoints else None,
            "code_version": checkpoints[-1].get("code_version") if checkpoints else None,
        },
    }
