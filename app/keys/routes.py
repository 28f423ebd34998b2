"""``/v1/keys``: create, list and revoke API keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from sqlalchemy import select

from app.auth import Admin, create_key
from app.db import SessionDep
from app.errors import NotFound
from app.keys.schemas import KeyCreate, KeyCreated, KeyList, KeyRead
from app.models import ApiKey
from app.routing import CheckedRoute

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=CheckedRoute)


@router.post("", status_code=201, response_model=KeyCreated)
def create_api_key(body: KeyCreate, session: SessionDep, _: Admin) -> KeyCreated:
    row, key = create_key(session, body.name, list(body.scopes), body.sources)
    return KeyCreated(**KeyRead.model_validate(row).model_dump(), key=key)


@router.get("", response_model=KeyList)
def list_api_keys(session: SessionDep, _: Admin) -> KeyList:
    rows = session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars().all()
    return KeyList(items=[KeyRead.model_validate(r) for r in rows])


@router.delete("/{key_id}", response_model=KeyRead)
def revoke_api_key(key_id: uuid.UUID, request: Request, session: SessionDep, _: Admin) -> KeyRead:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"No API key {key_id}.")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
    request.app.state.key_cache.evict_key_id(str(row.id))  # here at once; other processes by NOTIFY on commit
    return KeyRead.model_validate(row)
