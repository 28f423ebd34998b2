"""Request-level helpers shared by the POST routes: the JSON body parser and ``Idempotency-Key``
handling (the key is scoped to the calling API key; a replay returns the stored answer, the same
key with another body is a 409)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Header
from sqlalchemy.orm import Session

from app.auth import Principal
from app.errors import Conflict, ValidationFailed
from app.trajectories import repository as repo
from app.trajectories.service import request_sha256

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255,
                                               description="Replays return the original result.")]


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"The body is not valid JSON: {exc}", code="invalid_json") from None


def reserve(session: Session, principal: Principal, key: str | None, endpoint: str, body: Any
            ) -> tuple[str | None, dict[str, Any] | None]:
    """Reserve the Idempotency-Key; return (scoped key, stored response to replay or None)."""
    if key is None:
        return None, None
    scoped = f"{principal.key_id}:{key}"
    digest = request_sha256(body)
    record = repo.claim_idempotency_key(session, scoped, endpoint, digest)
    if record is None:
        return scoped, None
    if record.endpoint != endpoint or record.request_sha256 != digest:
        raise Conflict("This Idempotency-Key was used with a different request body.",
                       code="idempotency_key_reused")
    return scoped, record.response


def store(session: Session, scoped_key: str, status_code: int, response: dict[str, Any]) -> None:
    repo.store_idempotent_response(session, scoped_key, status_code, response)
