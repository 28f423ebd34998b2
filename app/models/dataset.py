"""Dataset tables: immutable snapshots of curated trajectories, their items, and deletion tombstones.

``datasets`` holds the request that built a snapshot (filter, statuses, split parameters), its
counts, statistics and content hash; none of it changes after creation. ``dataset_items`` holds one
row per selected trajectory with a *copy* of everything training and export need (canonical
messages, the pinned span set, tools, metadata, normalized complexity), so later span edits,
review changes or trajectory deletions never reach a snapshot. ``trajectory_id`` deliberately has
no foreign key: items outlive their trajectory. A forced trajectory deletion writes one
``dataset_tombstones`` row per holding dataset.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from contract.spans import Message, Span

SPLITS = ("train", "eval")


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint("eval_fraction >= 0 AND eval_fraction <= 0.5", name="eval_fraction"),
        Index("ix_datasets_created_at_id", "created_at", "id"),  # keyset listing
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    filter: Mapped[dict[str, Any]] = mapped_column(JSONB)
    statuses: Mapped[list[str]] = mapped_column(ARRAY(Text))
    eval_fraction: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(BigInteger)
    dedupe: Mapped[bool] = mapped_column(Boolean)
    max_per_task: Mapped[int | None] = mapped_column(Integer)
    n_items: Mapped[int] = mapped_column(Integer)
    n_train: Mapped[int] = mapped_column(Integer)
    n_eval: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    stats: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DatasetItem(Base):
    __tablename__ = "dataset_items"
    __table_args__ = (
        CheckConstraint(f"split IN {SPLITS}", name="split"),
        UniqueConstraint("dataset_id", "trajectory_id"),
        Index("ix_dataset_items_dataset_id_split_position", "dataset_id", "split", "position"),
        Index("ix_dataset_items_trajectory_id", "trajectory_id"),  # which datasets hold a trajectory
    )

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0.. in (created_at, id) order
    trajectory_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    span_revision: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(8))
    content_sha256: Mapped[str] = mapped_column(String(64))
    complexity_score: Mapped[float] = mapped_column(Float)
    complexity: Mapped[float] = mapped_column(Float)  # min-max normalized within the dataset, in [0, 1]
    messages: Mapped[list[Message]] = mapped_column(JSONB)
    spans: Mapped[list[Span]] = mapped_column(JSONB)
    tools: Mapped[list[Any] | None] = mapped_column(JSONB)
    source: Mapped[str] = mapped_column(Text)
    teacher_model: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    reward: Mapped[float | None] = mapped_column(Float)


class DatasetTombstone(Base):
    __tablename__ = "dataset_tombstones"

    dataset_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    trajectory_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_by: Mapped[str | None] = mapped_column(Text)
