"""API keys and scopes.

A key looks like ``dk_<prefix>_<secret>``; only the sha256 of the whole key is stored, and the
public prefix finds the row. ``require(scope)`` is the dependency every route uses; ``admin``
implies every scope. ``DISTILLERY_ADMIN_KEY`` is a bootstrap admin that needs no row. Verified
keys are trusted from memory for ``auth_cache_seconds`` to keep the ingest path off the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import open_session
from app.errors import Forbidden, Unauthorized
from app.models import ApiKey

SCOPES = ("ingest", "annotate", "curate", "operate", "admin")


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """Return ``(prefix, full_key)``."""
    prefix = secrets.token_hex(6)
    return prefix, f"dk_{prefix}_{secrets.token_urlsafe(32)}"


def parse_prefix(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "dk" or not parts[1]:
        return None
    return parts[1]


class KeyCache:
    """Verified key hash → (principal, expiry). Revocation in this process evicts at once."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        item = self._items.get(digest)
        if item is None or item[1] < time.monotonic():
            return None
        return item[0]

    def put(self, digest: str, principal: Principal, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[digest] = (principal, time.monotonic() + ttl)

    def evict_key_id(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (p, _) in self._items.items() if p.key_id == key_id]:
                del self._items[digest]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "Send an API key as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


async def authenticate(request: Request) -> Principal:
    """Resolve the request's key to a principal, or raise 401. The bootstrap key and recently
    verified keys are answered without leaving the event loop; others are looked up in a thread."""
    token = _bearer(request)
    state = request.app.state
    admin_key = state.settings.admin_key
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.get_secret_value().encode()):
        return Principal("bootstrap-admin", "bootstrap admin", frozenset(SCOPES))
    digest = hash_key(token)
    principal = state.key_cache.get(digest)
    if principal is not None:
        return principal
    return await run_in_threadpool(_lookup, request.app, token, digest)


def _lookup(app: Any, token: str, digest: str) -> Principal:
    prefix = parse_prefix(token)
    row = None
    if prefix is not None:
        with open_session(app) as session:
            row = session.execute(select(ApiKey).where(ApiKey.prefix == prefix)).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("The API key is not valid or was revoked.", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
    principal = Principal(str(row.id), row.name, frozenset(row.scopes))
    app.state.key_cache.put(digest, principal, app.state.settings.auth_cache_seconds)
    return principal


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the request's principal, which must hold ``scope`` (or ``admin``)."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not principal.has(scope):
            raise Forbidden(f"This API key lacks the '{scope}' scope.", code="missing_scope", required_scope=scope)
        request.state.key_id = principal.key_id
        return principal

    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the route-table test
    return dependency


def require_any(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not any(principal.has(s) for s in scopes):
            raise Forbidden(f"This API key needs one of the scopes: {', '.join(scopes)}.",
                            code="missing_scope", required_scope=list(scopes))
        request.state.key_id = principal.key_id
        return principal

    dependency.required_scope = scopes  # type: ignore[attr-defined]
    return dependency


Ingest = Annotated[Principal, Depends(require("ingest"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Reader = Annotated[Principal, Depends(require_any("annotate", "curate", "operate"))]


def create_key(session: Session, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    prefix, key = generate_key()
    row = ApiKey(name=name, prefix=prefix, key_hash=hash_key(key), scopes=sorted(set(scopes)))
    session.add(row)
    session.flush()
    return row, key
