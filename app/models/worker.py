"""Workers currently (or recently) alive: one row per process, refreshed by its heartbeat.

A worker advertises what it can run: ``devices`` (its GPUs: one entry each, with name and memory) and
``launchers`` (``inprocess``, ``torchrun``, ``slurm``); its claims pick only jobs that fit them, and a
job no live worker fits says why on read (``app/jobs/queue.py``). A worker is live while its heartbeat
is newer than three of its own leases (``lease_seconds``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Float, ForeignKey, Integer, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # host:pid:uuid8
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    devices: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    kinds: Mapped[list[str]] = mapped_column(JSONB, server_default="[]")
    launchers: Mapped[list[str]] = mapped_column(JSONB, server_default="[]")
    lease_seconds: Mapped[float | None] = mapped_column(Float)
    current_job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
