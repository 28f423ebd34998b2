"""Keyset cursors shared by every list endpoint: an opaque token for the last row's
``(created_at, id)``; lists are ordered newest first and continue strictly after it."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

from app.errors import ValidationFailed


def invalid_cursor() -> ValidationFailed:
    return ValidationFailed("The cursor is not valid.", code="invalid_cursor",
                            errors=[{"field": "cursor", "code": "invalid", "message": "not a cursor"}])


def encode_cursor(created_at: datetime, id_: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{id_}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        ts, id_ = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        return datetime.fromisoformat(ts), uuid.UUID(id_)
    except (ValueError, UnicodeDecodeError):
        raise invalid_cursor() from None
