"""Migrations: upgrade → downgrade → upgrade on a fresh database, no drift from the models, and
every migration file sets a lock_timeout."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app.migrate import downgrade, upgrade
from app.models import Base

VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"


def test_upgrade_downgrade_upgrade_and_no_drift(database_url):
    server = make_url(database_url)
    name = f"distillery_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        downgrade(url, "base")
        engine = create_engine(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(url)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migration_files_are_dated_and_set_lock_timeout():
    files = sorted(p for p in VERSIONS.glob("*.py") if p.name != "__init__.py")
    assert files
    for path in files:
        assert re.match(r"\d{4}_\d{2}_\d{2}_\d{4}-", path.name), path.name
        source = path.read_text()
        for fn in ("def upgrade", "def downgrade"):
            body = source.split(fn, 1)[1]
            assert "lock_timeout" in body.split("\ndef ", 1)[0], f"{path.name}: {fn} sets no lock_timeout"
