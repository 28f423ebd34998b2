"""Every revision of a trajectory's span set, revision 1 being the automatic (or client) one."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from contract.spans import Span


class SpanRevision(Base):
    __tablename__ = "span_revisions"

    trajectory_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("trajectories.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    spans: Mapped[list[Span]] = mapped_column(JSONB)
    source: Mapped[str] = mapped_column(String(16))  # auto | client | annotator
    author_key_id: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
