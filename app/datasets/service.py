"""Dataset rules: building an immutable snapshot, reading it, and guarding it against deletions.

A snapshot is made in the request's one transaction: the dataset row, then every selected
trajectory copied into ``dataset_items`` pinned to its current span revision (one INSERT …
SELECT; the transaction runs under its own statement timeout, ``db_snapshot_timeout_ms``), then
its statistics and content hash, stored on the row. Nothing afterwards writes to a snapshot's row
or items: span edits, review changes and trajectory deletions only touch the trajectory tables. A
filter that selects nothing is 422 ``empty_dataset`` and the transaction (dataset row included)
rolls back.

Deleting a trajectory that datasets hold is refused (409 ``trajectory_in_dataset``, naming them)
unless forced; forcing records a tombstone per holding dataset, whose items keep their copy.
Deleting a dataset that a job names is 409 ``dataset_in_use``. Services never commit.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.datasets import repository as repo
from app.datasets.schemas import DatasetCreate
from app.datasets.stats import build_stats
from app.errors import Conflict, NotFound, ValidationFailed
from app.models import Dataset


class EmptyDataset(ValidationFailed):
    code = "empty_dataset"


def create(session: Session, body: DatasetCreate, author_key_id: str, *, timeout_ms: int | None = None) -> Dataset:
    """Snapshot the trajectories ``body`` selects; raise ``EmptyDataset`` when there are none.

    ``timeout_ms``: the statement timeout for the rest of this transaction (``db_snapshot_timeout_ms``): the copy
    of a large selection is one statement, legitimately longer than the per-statement guard of requests.
    """
    if timeout_ms is not None:
        session.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
    statuses: list[str] = sorted(set(body.statuses))
    row = Dataset(
        id=uuid.uuid4(), name=body.name, description=body.description,
        filter=body.filter.model_dump(mode="json", exclude_none=True), statuses=statuses,
        eval_fraction=body.eval_fraction, seed=body.seed, dedupe=body.dedupe, max_per_task=body.max_per_task,
        n_items=0, n_train=0, n_eval=0, content_sha256="", stats={}, created_by=author_key_id,
    )
    repo.insert_dataset(session, row)
    counts = repo.snapshot_items(session, row.id, body.filter, statuses, eval_fraction=body.eval_fraction,
                                 seed=body.seed, dedupe=body.dedupe, max_per_task=body.max_per_task)
    if counts.n_items == 0:
        raise EmptyDataset(
            f"The filter selects no trajectories ({counts.n_candidates} matched the filter and statuses "
            f"{', '.join(statuses)}; none left after dedupe and max_per_task). Nothing was stored.",
            n_candidates=counts.n_candidates, statuses=statuses)
    row.n_items, row.n_eval, row.n_train = counts.n_items, counts.n_eval, counts.n_items - counts.n_eval
    row.stats = build_stats(repo.item_stats(session, row.id), n_candidates=counts.n_candidates,
                            n_kept=counts.n_kept)
    row.content_sha256 = repo.content_hash(session, row.id)
    session.flush()
    return row


def get_or_404(session: Session, dataset_id: uuid.UUID) -> Dataset:
    row = repo.get(session, dataset_id)
    if row is None:
        raise NotFound(f"No dataset {dataset_id}.")
    return row


def to_read(row: Dataset, n_deleted: int) -> dict[str, Any]:
    """The ``DatasetRead`` fields of a row."""
    return {
        "id": row.id, "name": row.name, "description": row.description, "created_at": row.created_at,
        "created_by": row.created_by, "filter": row.filter, "statuses": row.statuses,
        "eval_fraction": row.eval_fraction, "seed": row.seed, "dedupe": row.dedupe,
        "max_per_task": row.max_per_task, "counts": {"items": row.n_items, "train": row.n_train, "eval": row.n_eval},
        "content_sha256": row.content_sha256, "stats": row.stats, "n_deleted_trajectories": n_deleted,
    }


def read(session: Session, dataset_id: uuid.UUID) -> dict[str, Any]:
    row = get_or_404(session, dataset_id)
    return to_read(row, repo.tombstone_counts(session, [row.id]).get(row.id, 0))


def delete(session: Session, dataset_id: uuid.UUID) -> None:
    """Delete a dataset with its items and tombstones, unless a job names it."""
    row = repo.lock(session, dataset_id)
    if row is None:
        raise NotFound(f"No dataset {dataset_id}.")
    jobs = repo.jobs_referencing(session, dataset_id)
    if jobs:
        raise Conflict(f"Dataset {dataset_id} is used by {len(jobs)} job(s); delete those first.",
                       code="dataset_in_use", jobs=[str(j) for j in jobs])
    repo.delete(session, dataset_id)


def before_trajectory_delete(session: Session, trajectory_id: uuid.UUID, actor_key_id: str, *,
                             force: bool) -> None:
    """Called before a trajectory is deleted: refuse (409) when datasets hold it, or with ``force``
    write their tombstones. Their items keep the trajectory id and its copied content."""
    repo.lock_against_snapshots(session)
    if not repo.trajectory_exists(session, trajectory_id):
        return  # the caller answers 404
    holding = repo.datasets_holding(session, trajectory_id)
    if not holding:
        return
    if not force:
        names = ", ".join(f"{d.name} ({d.id})" for d in holding[:10])
        raise Conflict(
            f"Trajectory {trajectory_id} is in {len(holding)} dataset(s): {names}. Datasets are immutable; "
            "delete with ?force=true to keep their copies and record a tombstone in each.",
            code="trajectory_in_dataset", datasets=[{"id": str(d.id), "name": d.name} for d in holding])
    repo.insert_tombstones(session, trajectory_id, actor_key_id)
