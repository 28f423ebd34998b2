"""Annotation tables: the review history of trajectories and the annotation-queue leases.

``review_events`` keeps one row per review transition (single or bulk), never updated: who moved
a trajectory from which status to which, with what note, at which span revision. The current
state (status, last reviewer, note, time) lives on the trajectory row itself.

``annotation_leases`` keeps every lease the queue handed out. A lease is *live* while
``ended_at`` is null and ``expires_at`` is in the future; the partial unique index allows at most
one open lease per trajectory, so even a claim racing on a stale snapshot cannot create a second
one. An expired lease stays open until the next claim of its trajectory closes it
(``end_reason = 'expired'``); a claim ignores expired leases.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

REVIEW_ACTIONS = ("start", "approve", "reject", "reopen")
LEASE_END_REASONS = ("released", "completed", "expired")


class ReviewEvent(Base):
    __tablename__ = "review_events"
    __table_args__ = (
        CheckConstraint(f"action IN {REVIEW_ACTIONS}", name="action"),
        Index("ix_review_events_trajectory_id_id", "trajectory_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    trajectory_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("trajectories.id", ondelete="CASCADE")
    )
    action: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor_key_id: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    span_revision: Mapped[int] = mapped_column(Integer)
    bulk: Mapped[bool] = mapped_column(Boolean, server_default="false")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AnnotationLease(Base):
    __tablename__ = "annotation_leases"
    __table_args__ = (
        CheckConstraint(f"end_reason IN {LEASE_END_REASONS}", name="end_reason"),
        Index("uq_annotation_leases_open_trajectory", "trajectory_id", unique=True,
              postgresql_where=text("ended_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    trajectory_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("trajectories.id", ondelete="CASCADE")
    )
    holder_key_id: Mapped[str] = mapped_column(Text)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_reason: Mapped[str | None] = mapped_column(String(16))
