"""All SQL for datasets: the snapshot INSERT … SELECT, statistics, content hash, listings, tombstones,
and the server-side-cursor read of records that export and the worker use.

A snapshot is built by one statement: filter → dedupe → per-task cap → order → copy each selected
trajectory's canonical messages, tools, metadata and *current* span set (joined from
``span_revisions``) into ``dataset_items``, with the split and the normalized complexity computed
in SQL. No row travels through Python, so a 20k-trajectory snapshot costs one statement.

Snapshots and forced trajectory deletions serialize on one advisory lock (shared for snapshots,
exclusive for deletions): a deletion waits for snapshots in flight and then sees their items, so
no snapshot can commit a trajectory that was deleted without a tombstone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, text, tuple_
from sqlalchemy.orm import Session

from app.datasets.schemas import DatasetFilter
from app.datasets.split import SQL_IS_EVAL, threshold_hex
from app.models import Dataset

_LOCK_KEY = 0x64617461736574  # "dataset": snapshot (shared) vs trajectory deletion (exclusive)

# filter field → SQL condition over ``trajectories t`` (bind name = field name)
_CONDITIONS = {
    "source": "t.source = :source",
    "teacher_model": "t.teacher_model = :teacher_model",
    "task_type": "t.task_type = :task_type",
    "outcome": "t.outcome = :outcome",
    "format": "t.format = :format",
    "reward_min": "t.reward >= :reward_min",
    "reward_max": "t.reward <= :reward_max",
    "tags": "t.tags @> CAST(:tags AS text[])",
    "complexity_min": "t.complexity_score >= :complexity_min",
    "complexity_max": "t.complexity_score <= :complexity_max",
    "created_after": "t.created_at >= :created_after",
    "created_before": "t.created_at < :created_before",
}

_SNAPSHOT = """
WITH candidates AS (
    SELECT t.id, t.created_at, t.task, t.content_sha256
    FROM trajectories t
    WHERE {where}
),
ranked AS (
    SELECT c.id, c.created_at, c.task,
           row_number() OVER (PARTITION BY c.content_sha256 ORDER BY c.created_at, c.id) AS dup_rank
    FROM candidates c
),
kept AS (
    SELECT id, created_at, task FROM ranked WHERE NOT CAST(:dedupe AS boolean) OR dup_rank = 1
),
capped AS (
    SELECT k.id, k.created_at, k.task,
           row_number() OVER (PARTITION BY k.task ORDER BY k.created_at, k.id) AS task_rank
    FROM kept k
),
selected AS (
    SELECT id, row_number() OVER (ORDER BY created_at, id) - 1 AS position
    FROM capped
    WHERE CAST(:max_per_task AS integer) IS NULL OR task IS NULL OR task_rank <= CAST(:max_per_task AS integer)
),
inserted AS (
    INSERT INTO dataset_items (dataset_id, position, trajectory_id, span_revision, split, content_sha256,
                               complexity_score, complexity, messages, spans, tools, source, teacher_model,
                               task_type, outcome, reward)
    SELECT :dataset_id, s.position, t.id, t.span_revision,
           CASE WHEN {is_eval} THEN 'eval' ELSE 'train' END,
           t.content_sha256, t.complexity_score,
           CASE WHEN max(t.complexity_score) OVER () > min(t.complexity_score) OVER ()
                THEN (t.complexity_score - min(t.complexity_score) OVER ())
                     / (max(t.complexity_score) OVER () - min(t.complexity_score) OVER ())
                ELSE 0 END,
           t.messages, r.spans, t.tools, t.source, t.teacher_model, t.task_type, t.outcome, t.reward
    FROM selected s
    JOIN trajectories t ON t.id = s.id
    JOIN span_revisions r ON r.trajectory_id = t.id AND r.revision = t.span_revision
    RETURNING split
)
SELECT (SELECT count(*) FROM candidates) AS n_candidates,
       (SELECT count(*) FROM kept) AS n_kept,
       count(*) AS n_items,
       count(*) FILTER (WHERE split = 'eval') AS n_eval
FROM inserted
"""


@dataclass(frozen=True)
class SnapshotCounts:
    n_candidates: int
    n_kept: int  # after dedupe
    n_items: int
    n_eval: int


def insert_dataset(session: Session, row: Dataset) -> None:
    session.add(row)
    session.flush()


def snapshot_items(session: Session, dataset_id: uuid.UUID, f: DatasetFilter, statuses: list[str], *,
                   eval_fraction: float, seed: int, dedupe: bool, max_per_task: int | None) -> SnapshotCounts:
    """Copy the selected trajectories into ``dataset_items`` (one statement); return the counts."""
    session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _LOCK_KEY})
    conditions = ["t.status = ANY(CAST(:statuses AS text[]))"]
    params: dict[str, Any] = {"statuses": statuses, "dataset_id": dataset_id, "dedupe": dedupe,
                              "max_per_task": max_per_task, "seed": seed, "threshold": threshold_hex(eval_fraction)}
    for field, condition in _CONDITIONS.items():
        value = getattr(f, field)
        if value is not None and value != []:
            conditions.append(condition)
            params[field] = value
    sql = _SNAPSHOT.format(where=" AND ".join(conditions), is_eval=SQL_IS_EVAL)
    row = session.execute(text(sql), params).one()
    return SnapshotCounts(int(row.n_candidates), int(row.n_kept), int(row.n_items), int(row.n_eval))


def _counts_by(session: Session, dataset_id: uuid.UUID, column: str) -> dict[str, int]:
    rows = session.execute(text(f"SELECT {column} AS value, count(*) AS n FROM dataset_items "
                                f"WHERE dataset_id = :id GROUP BY 1 ORDER BY 1"), {"id": dataset_id})
    return {("(none)" if r.value is None else str(r.value)): int(r.n) for r in rows}


def item_stats(session: Session, dataset_id: uuid.UUID) -> dict[str, Any]:
    """Raw aggregates over a dataset's items (the service shapes them): counts per split, source,
    task_type, outcome; span count and characters per kind; complexity range, mean, histogram bins."""
    summary = session.execute(text(
        "SELECT count(*) AS n, coalesce(sum(jsonb_array_length(messages)), 0) AS n_messages,"
        " min(complexity_score) AS lo, max(complexity_score) AS hi, avg(complexity_score) AS mean"
        " FROM dataset_items WHERE dataset_id = :id"), {"id": dataset_id}).one()
    spans = session.execute(text(
        "SELECT s->>'kind' AS kind, count(*) AS n, sum((s->>'end')::int - (s->>'start')::int) AS chars"
        " FROM dataset_items i CROSS JOIN LATERAL jsonb_array_elements(i.spans) s"
        " WHERE i.dataset_id = :id GROUP BY 1"), {"id": dataset_id})
    bins = session.execute(text(
        "SELECT least(floor(complexity * 10)::int, 9) AS bin, count(*) AS n FROM dataset_items"
        " WHERE dataset_id = :id GROUP BY 1"), {"id": dataset_id})
    return {
        "n_items": int(summary.n), "n_messages": int(summary.n_messages),
        "complexity_min": summary.lo, "complexity_max": summary.hi, "complexity_mean": summary.mean,
        "by_split": _counts_by(session, dataset_id, "split"),
        "by_source": _counts_by(session, dataset_id, "source"),
        "by_task_type": _counts_by(session, dataset_id, "task_type"),
        "by_outcome": _counts_by(session, dataset_id, "outcome"),
        "spans": {r.kind: (int(r.n), int(r.chars)) for r in spans},
        "bins": {int(r.bin): int(r.n) for r in bins},
    }


def content_hash(session: Session, dataset_id: uuid.UUID) -> str:
    """sha256 over the items' lines '{trajectory_id}\\t{span_revision}\\t{content_sha256}\\t{split}\\n',
    sorted bytewise (ids are unique, so this is trajectory-id order)."""
    return str(session.execute(text(
        "SELECT encode(sha256(convert_to(coalesce(string_agg(line, '' ORDER BY line COLLATE \"C\"), ''),"
        " 'UTF8')), 'hex') FROM (SELECT trajectory_id::text || E'\\t' || span_revision || E'\\t'"
        " || content_sha256 || E'\\t' || split || E'\\n' AS line FROM dataset_items WHERE dataset_id = :id) x"),
        {"id": dataset_id}).scalar_one())


def get(session: Session, dataset_id: uuid.UUID) -> Dataset | None:
    return session.get(Dataset, dataset_id)


def lock(session: Session, dataset_id: uuid.UUID) -> Dataset | None:
    return session.execute(select(Dataset).where(Dataset.id == dataset_id).with_for_update()).scalar_one_or_none()


def list_page(session: Session, name: str | None, limit: int,
              after: tuple[datetime, uuid.UUID] | None) -> list[Dataset]:
    """Newest first, keyset-paginated on (created_at, id)."""
    stmt = select(Dataset)
    if name is not None:
        stmt = stmt.where(Dataset.name == name)
    if after is not None:
        stmt = stmt.where(tuple_(Dataset.created_at, Dataset.id) < tuple_(*after))
    return list(session.execute(stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit)).scalars())


def tombstone_counts(session: Session, dataset_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not dataset_ids:
        return {}
    rows = session.execute(text("SELECT dataset_id, count(*) AS n FROM dataset_tombstones"
                                " WHERE dataset_id = ANY(:ids) GROUP BY 1"), {"ids": dataset_ids})
    return {r.dataset_id: int(r.n) for r in rows}


def list_items(session: Session, dataset_id: uuid.UUID, split: str | None, after: int, limit: int) -> list[Row[Any]]:
    """Items with position > ``after`` in position order, flagged when their trajectory was deleted."""
    where = " AND i.split = :split" if split else ""
    return list(session.execute(text(
        "SELECT i.position, i.trajectory_id, i.span_revision, i.split, i.content_sha256, i.complexity_score,"
        " i.complexity, (d.trajectory_id IS NOT NULL) AS trajectory_deleted"
        " FROM dataset_items i LEFT JOIN dataset_tombstones d"
        "   ON d.dataset_id = i.dataset_id AND d.trajectory_id = i.trajectory_id"
        f" WHERE i.dataset_id = :id AND i.position > :after{where} ORDER BY i.position LIMIT :limit"),
        {"id": dataset_id, "after": after, "split": split, "limit": limit}))


def count_items(session: Session, dataset_id: uuid.UUID, split: str | None) -> int:
    where = " AND split = :split" if split else ""
    return int(session.execute(text(f"SELECT count(*) FROM dataset_items WHERE dataset_id = :id{where}"),
                               {"id": dataset_id, "split": split}).scalar_one())


# ---- trajectory deletion ----------------------------------------------------------------------------------

def lock_against_snapshots(session: Session) -> None:
    """Wait for snapshots in flight (and hold new ones off) until this transaction ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def trajectory_exists(session: Session, trajectory_id: uuid.UUID) -> bool:
    return session.execute(text("SELECT EXISTS (SELECT 1 FROM trajectories WHERE id = :id)"),
                           {"id": trajectory_id}).scalar_one() is True


def datasets_holding(session: Session, trajectory_id: uuid.UUID) -> list[Row[Any]]:
    return list(session.execute(text(
        "SELECT d.id, d.name FROM datasets d WHERE EXISTS"
        " (SELECT 1 FROM dataset_items i WHERE i.dataset_id = d.id AND i.trajectory_id = :tid)"
        " ORDER BY d.created_at, d.id"), {"tid": trajectory_id}))


def insert_tombstones(session: Session, trajectory_id: uuid.UUID, deleted_by: str) -> int:
    result = session.execute(text(
        "INSERT INTO dataset_tombstones (dataset_id, trajectory_id, deleted_by)"
        " SELECT dataset_id, trajectory_id, :by FROM dataset_items WHERE trajectory_id = :tid"
        " ON CONFLICT DO NOTHING"), {"tid": trajectory_id, "by": deleted_by})
    return int(result.rowcount)  # type: ignore[attr-defined]


# ---- dataset deletion -------------------------------------------------------------------------------------

def jobs_referencing(session: Session, dataset_id: uuid.UUID, limit: int = 20) -> list[uuid.UUID]:
    """Jobs naming the dataset, in their column or in their config's ``dataset_id``."""
    rows = session.execute(text(
        "SELECT id FROM jobs WHERE dataset_id = :id OR config->>'dataset_id' = :id_text"
        " ORDER BY created_at LIMIT :limit"), {"id": dataset_id, "id_text": str(dataset_id), "limit": limit})
    return [r.id for r in rows]


def delete(session: Session, dataset_id: uuid.UUID) -> None:
    session.execute(text("DELETE FROM datasets WHERE id = :id"), {"id": dataset_id})
