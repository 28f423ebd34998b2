"""How the server-side commands reach Postgres: the configured URL (or the embedded server) and a
``Database`` from app's public session layer. Imported lazily by each command, so ``--help`` and the
HTTP-only ``jobs`` commands never load SQLAlchemy."""

from __future__ import annotations

from app.config import get_settings
from app.db import Database
from app.embedded import resolve_database_url
from app.migrate import upgrade


def database_url() -> str:
    """``DISTILLERY_DATABASE_URL``, or an embedded Postgres started in the per-user data folder."""
    settings = get_settings()
    return resolve_database_url(settings.database_url, settings.pgdata_dir)


def open_database(*, migrate: bool = True) -> Database:
    """A ``Database`` on ``database_url()``, migrated to head first unless ``migrate`` is false."""
    url = database_url()
    if migrate:
        upgrade(url)
    return Database(url, get_settings())
