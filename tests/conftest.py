"""Test fixtures: a real Postgres (embedded by default, or DISTILLERY_TEST_DATABASE_URL), migrated
once per session into a fresh database; each API test runs inside a transaction rolled back at
the end, and tests that need real commits (races) use ``committed_app`` and truncate after."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ADMIN_KEY = "test-admin-key-0123456789"


def _server_url() -> str:
    url = os.environ.get("DISTILLERY_TEST_DATABASE_URL")
    if url:
        from app.embedded import resolve_database_url

        return resolve_database_url(url, Path("/nonexistent"))
    from app.embedded import start_embedded

    return start_embedded(Path(platformdirs.user_cache_dir("distillery-tests")) / "pgdata")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database on the test server, migrated to head; dropped at the end."""
    server = make_url(_server_url())
    name = f"distillery_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    from app.migrate import upgrade

    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from app.config import Settings

    # The key cache runs as in production (default auth_cache_seconds), so revocation is proved against it;
    # a test that needs every request looked up uses ``settings.model_copy(update={"auth_cache_seconds": 0})``.
    # The lookup budget and the per-key limits are set far above what the suite sends: its own traffic must
    # never meet a 429 (tests of the limits build their own Limiter).
    return Settings(admin_key=ADMIN_KEY, data_dir=tmp_path_factory.mktemp("data"), log_json=True,
                    auth_lookups_per_second=100_000, rate_limit_per_second=100_000,
                    rate_limit_burst=100_000, max_in_flight_per_key=1_000)


@pytest.fixture(scope="session")
def database(database_url: str, settings):  # type: ignore[no-untyped-def]
    from app.db import Database

    db = Database(database_url, settings)
    yield db
    db.dispose()


@pytest.fixture
def app(database, settings):  # type: ignore[no-untyped-def]
    """The API with every request's session joined to one outer transaction, rolled back after."""
    from app.main import create_app

    application = create_app(settings, database=database, migrate=False)
    connection = database.engine.connect()
    outer = connection.begin()

    def session_factory() -> Iterator[Session]:
        session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    application.state.session_factory = session_factory
    yield application
    outer.rollback()
    connection.close()


def truncate_all(engine) -> None:  # type: ignore[no-untyped-def]
    """Empty every table of the schema (after a test that committed for real)."""
    from app.models import Base

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))


@pytest.fixture
def committed_app(database, settings):  # type: ignore[no-untyped-def]
    """The API committing for real (for races); every table is truncated afterwards."""
    from app.main import create_app

    yield create_app(settings, database=database, migrate=False)
    truncate_all(database.engine)


def _client(application):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    return TestClient(application, headers={"Authorization": f"Bearer {ADMIN_KEY}"})


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    with _client(app) as c:
        yield c


@pytest.fixture
def committed_client(committed_app):  # type: ignore[no-untyped-def]
    with _client(committed_app) as c:
        yield c
