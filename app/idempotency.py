"""``Idempotency-Key`` handling shared by the POST routes: the key is scoped to the calling API key; a
replay returns the stored answer, the same key with another body is a 409. A record expires
``idempotency_ttl_seconds`` after it was made (default 24 h): the key is then free again, and a
background task of the API deletes expired records (``purge``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header
from sqlalchemy.orm import Session

from app.auth import Principal
from app.errors import Conflict
from app.trajectories import repository as repo
from app.trajectories.service import request_sha256

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255,
                                               description="Replays return the original result (for 24 h).")]


def reserve(session: Session, principal: Principal, key: str | None, endpoint: str, body: Any, ttl_seconds: int
            ) -> tuple[str | None, dict[str, Any] | None]:
    """Reserve the Idempotency-Key; return (scoped key, stored response to replay or None)."""
    if key is None:
        return None, None
    scoped = f"{principal.key_id}:{key}"
    digest = request_sha256(body)
    record = repo.claim_idempotency_key(session, scoped, endpoint, digest, ttl_seconds)
    if record is None:
        return scoped, None
    if record.endpoint != endpoint or record.request_sha256 != digest:
        raise Conflict("This Idempotency-Key was used with a different request body.",
                       code="idempotency_key_reused")
    return scoped, record.response


def store(session: Session, scoped_key: str, status_code: int, response: dict[str, Any]) -> None:
    repo.store_idempotent_response(session, scoped_key, status_code, response)


def purge(session: Session, ttl_seconds: int, limit: int = 10_000) -> int:
    """Delete up to ``limit`` expired records; returns how many."""
    return repo.purge_idempotency_keys(session, ttl_seconds, limit)
