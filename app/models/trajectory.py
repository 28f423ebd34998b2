"""A trajectory: one run of a teacher agent on one task, in canonical form, with its raw payload."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Float, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from contract.complexity import Complexity
from contract.spans import Message

OUTCOMES = ("success", "failure", "unknown")
STATUSES = ("pending", "in_review", "approved", "rejected")


class Trajectory(Base):
    __tablename__ = "trajectories"
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        CheckConstraint(f"outcome IN {OUTCOMES}", name="outcome"),
        CheckConstraint(f"status IN {STATUSES}", name="status"),
        Index("ix_trajectories_created_at_id", "created_at", "id"),
        Index("ix_trajectories_source_created_at", "source", "created_at"),
        Index("ix_trajectories_task_type", "task_type"),
        Index("ix_trajectories_status", "status"),
        Index("ix_trajectories_tags", "tags", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(32))
    teacher_model: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str | None] = mapped_column(Text)
    task_type: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16), server_default="unknown")
    reward: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default="{}")
    messages: Mapped[list[Message]] = mapped_column(JSONB)
    tools: Mapped[list[Any] | None] = mapped_column(JSONB)
    # json, not jsonb: the payload as received keeps its key order and number spelling
    raw: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_sha256: Mapped[str] = mapped_column(String(64))
    request_sha256: Mapped[str] = mapped_column(String(64))
    complexity: Mapped[Complexity] = mapped_column(JSONB)
    complexity_score: Mapped[float] = mapped_column(Float)
    n_messages: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    span_revision: Mapped[int] = mapped_column(Integer, server_default="1")
    # The last review action (app/annotations): who, with what note, when.
    reviewer_key_id: Mapped[str | None] = mapped_column(Text)
    review_note: Mapped[str | None] = mapped_column(Text)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
