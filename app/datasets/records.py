"""A dataset snapshot's records, read in position order: the public read that the dataset export and the
workers (``worker.store``) share. Each record is a ``contract.spans.DatasetRecord``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.datasets.repository import get
from contract.spans import DatasetRecord

_RECORD_COLUMNS = ("SELECT trajectory_id, span_revision, split, complexity, messages::text AS messages,"
                   " spans::text AS spans, tools::text AS tools, source, task_type, outcome, reward, teacher_model"
                   " FROM dataset_items WHERE dataset_id = :id")


def iter_records(session: Session, dataset_id: uuid.UUID, split: str | None = None,
                 chunk_size: int = 256) -> Iterator[DatasetRecord]:
    """The dataset's records in position order through a server-side cursor, ``chunk_size`` rows at a
    time: memory stays flat however large the dataset. JSON columns come as text and are parsed with
    orjson (faster than the driver's json)."""
    where = " AND split = :split" if split else ""
    stmt = text(_RECORD_COLUMNS + where + " ORDER BY position").execution_options(yield_per=chunk_size)
    for r in session.execute(stmt, {"id": dataset_id, "split": split}):
        yield _record(r)


def read_page(session: Session, dataset_id: uuid.UUID, split: str | None, after_position: int,
              limit: int) -> list[tuple[int, DatasetRecord]]:
    """Up to ``limit`` records after ``after_position``, with their positions: a keyset page, read in a
    statement of its own so that a stream can hold no connection between pages (``app.datasets.export``)."""
    where = " AND split = :split" if split else ""
    rows = session.execute(text(_RECORD_COLUMNS.replace("SELECT ", "SELECT position, ", 1) + where
                                + " AND position > :after ORDER BY position LIMIT :limit"),
                           {"id": dataset_id, "split": split, "after": after_position, "limit": limit})
    return [(int(r.position), _record(r)) for r in rows]


def _record(r: Any) -> DatasetRecord:
    return {
        "id": str(r.trajectory_id), "messages": orjson.loads(r.messages),
        "spans": [{"message": s["message"], "start": s["start"], "end": s["end"], "kind": s["kind"]}
                  for s in orjson.loads(r.spans)],
        "tools": orjson.loads(r.tools) if r.tools is not None else None, "complexity": r.complexity,
        "split": r.split, "source": r.source, "task_type": r.task_type, "outcome": r.outcome,
        "reward": r.reward, "teacher_model": r.teacher_model, "span_revision": r.span_revision,
    }


def load_records(session: Session, dataset_id: uuid.UUID) -> list[DatasetRecord] | None:
    """Every record of a dataset (train and eval), or None when the dataset does not exist."""
    if get(session, dataset_id) is None:
        return None
    return list(iter_records(session, dataset_id))
