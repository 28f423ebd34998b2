"""API keys and scopes.

A key looks like ``dk_<prefix>_<secret>``; only the sha256 of the whole key is stored, and the
public prefix finds the row. ``require(scope)`` is the dependency every route uses; ``admin``
implies every scope, and it also applies the per-key rate and in-flight limits (``app.limits``).
``DISTILLERY_ADMIN_KEY`` is a bootstrap admin that needs no row. Verified keys are trusted from
memory for ``auth_cache_seconds`` and unknown ones refused from memory for
``auth_negative_cache_seconds``, to keep the ingest path off the database; revocation reaches every
process through NOTIFY. An ingest key may be bound to sources: it writes only to those.
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
READ_SCOPES = ("annotate", "curate", "operate")  # the scopes that read stored trajectories (admin implies them)


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    sources: frozenset[str] | None = None  # an ingest key bound to these sources; None: any source

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def may_write(self, source: str) -> bool:
        return self.sources is None or source in self.sources

    def may_read_trajectories(self) -> bool:
        return any(self.has(s) for s in READ_SCOPES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """Return ``(prefix, full_key)``."""
    prefix = secrets.token_hex(6)
    return prefix, f"dk_{prefix}_{secrets.token_urlsafe(32)}"


def parse_prefix(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "dk" or not parts[1] or len(parts[1]) > 16:
        return None
    return parts[1]


class KeyCache:
    """What this process knows about keys, so that most requests never ask the database.

    Verified keys: hash → (principal, expiry). Unknown keys: hash → expiry, and prefixes no key has →
    expiry (a flood of made-up keys costs one lookup per prefix, not one per request). Revocation
    evicts at once here and, through NOTIFY (``app.notify``), in every other process; a lost
    listener connection clears the verified keys, since revocations may have been missed meanwhile.
    Both maps are bounded.
    """

    MAX_ITEMS = 10_000

    def __init__(self) -> None:
        self._items: dict[str, tuple[Principal, float]] = {}
        self._unknown: dict[str, float] = {}
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
            if len(self._items) > self.MAX_ITEMS:
                self._items.clear()
            self._items[digest] = (principal, time.monotonic() + ttl)

    def is_unknown(self, *names: str) -> bool:
        now = time.monotonic()
        return any(self._unknown.get(n, 0.0) > now for n in names)

    def put_unknown(self, name: str, ttl: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            if len(self._unknown) > self.MAX_ITEMS:
                self._unknown.clear()
            self._unknown[name] = time.monotonic() + ttl

    def evict_key_id(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (p, _) in self._items.items() if p.key_id == key_id]:
                del self._items[digest]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


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


def _invalid() -> Unauthorized:
    return Unauthorized("The API key is not valid or was revoked.", code="invalid_api_key",
                        headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    """Resolve the request's key to a principal, or raise 401. The bootstrap key, recently verified keys
    and recently refused ones are answered without leaving the event loop; others are looked up in a
    thread, at most ``auth_lookups_per_second`` a second per process (429 beyond: a flood of made-up
    keys must not take the database from everyone else)."""
    token = _bearer(request)
    state = request.app.state
    admin_key = state.settings.admin_key
    if admin_key is not None and hmac.compare_digest(token.encode(), admin_key.get_secret_value().encode()):
        return Principal("bootstrap-admin", "bootstrap admin", frozenset(SCOPES))
    digest = hash_key(token)
    cache: KeyCache = state.key_cache
    principal = cache.get(digest)
    if principal is not None:
        return principal
    prefix = parse_prefix(token)
    if prefix is None or cache.is_unknown(digest, "prefix:" + prefix):
        raise _invalid()
    state.limiter.admit_lookup()
    return await run_in_threadpool(_lookup, request.app, prefix, digest)


def _lookup(app: Any, prefix: str, digest: str) -> Principal:
    settings = app.state.settings
    with open_session(app) as session:
        row = session.execute(select(ApiKey).where(ApiKey.prefix == prefix)).scalar_one_or_none()
    if row is None:
        app.state.key_cache.put_unknown("prefix:" + prefix, settings.auth_negative_cache_seconds)
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        app.state.key_cache.put_unknown(digest, settings.auth_negative_cache_seconds)
        raise _invalid()
    principal = Principal(str(row.id), row.name, frozenset(row.scopes),
                          frozenset(row.sources) if row.sources is not None else None)
    app.state.key_cache.put(digest, principal, settings.auth_cache_seconds)
    return principal


def _admit(request: Request, principal: Principal) -> None:
    """Per-key rate and in-flight limits (429); the in-flight slot is released when the response is done."""
    if getattr(request.state, "release", None) is not None:
        return  # counted once per request, however many dependencies authenticate it
    release = request.app.state.limiter.admit(principal.key_id)
    request.state.key_id = principal.key_id
    request.state.release = release


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the request's principal, which must hold ``scope`` (or ``admin``)."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not principal.has(scope):
            raise Forbidden(f"This API key lacks the '{scope}' scope.", code="missing_scope", required_scope=scope)
        _admit(request, principal)
        return principal

    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the route-table test
    return dependency


def require_any(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not any(principal.has(s) for s in scopes):
            raise Forbidden(f"This API key needs one of the scopes: {', '.join(scopes)}.",
                            code="missing_scope", required_scope=list(scopes))
        _admit(request, principal)
        return principal

    dependency.required_scope = scopes  # type: ignore[attr-defined]
    return dependency


Ingest = Annotated[Principal, Depends(require("ingest"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Reader = Annotated[Principal, Depends(require_any("annotate", "curate", "operate"))]


def create_key(session: Session, name: str, scopes: list[str], sources: list[str] | None = None
               ) -> tuple[ApiKey, str]:
    prefix, key = generate_key()
    row = ApiKey(name=name, prefix=prefix, key_hash=hash_key(key), scopes=sorted(set(scopes)),
                 sources=sorted(set(sources)) if sources is not None else None)
    session.add(row)
    session.flush()
    return row, key
