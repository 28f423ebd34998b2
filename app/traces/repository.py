"""The SQL of the traces domain: the stored trajectory a trace may extend, locked for the request, and
whether an annotator holds it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class StoredTrace:
    id: uuid.UUID
    format: str
    status: str
    span_revision: int
    request_sha256: str
    raw: str
    claimed: bool  # an annotator holds an open lease on it (app.annotations)


def stored_trace(session: Session, source: str, external_id: str) -> StoredTrace | None:
    """The trajectory stored under (source, external_id), locked until the transaction ends so that two
    exports of one trace extend it one after the other."""
    row = session.execute(text(
        "SELECT t.id, t.format, t.status, t.span_revision, t.request_sha256, t.raw::text AS raw,"
        " EXISTS (SELECT 1 FROM annotation_leases l WHERE l.trajectory_id = t.id AND l.ended_at IS NULL"
        " AND l.expires_at > now()) AS claimed"
        " FROM trajectories t WHERE t.source = :source AND t.external_id = :external_id FOR UPDATE OF t"),
        {"source": source, "external_id": external_id}).one_or_none()
    if row is None:
        return None
    return StoredTrace(id=row.id, format=row.format, status=row.status, span_revision=row.span_revision,
                       request_sha256=row.request_sha256, raw=row.raw, claimed=row.claimed)
