"""Engine, sessions and the per-request unit of work.

``Database`` owns the engine and sessionmaker. ``get_session`` is the FastAPI dependency: it
commits when the route returns and rolls back on any error, *before* the response is sent
(dependency scope ``function``), so nothing is acknowledged that is not committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


class Database:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.engine: Engine = create_engine(
            url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,
            pool_timeout=5,
            json_serializer=_json_dumps,
            connect_args={"connect_timeout": 5},
            hide_parameters=True,  # errors quote statements, never the request's values
        )
        timeout = settings.db_statement_timeout_ms
        idle = settings.db_idle_in_transaction_timeout_ms

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = {int(timeout)}")
                # A second guard behind the streams that always close their sessions: a transaction
                # left idle (a bug, a stuck client) is ended by the server instead of holding a connection.
                cur.execute(f"SET idle_in_transaction_session_timeout = {int(idle)}")
            dbapi_conn.commit()

        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def session_scope(db: Database) -> Iterator[Session]:
    session = db.sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _sessions(app: Any) -> Iterator[Session]:
    factory = getattr(app.state, "session_factory", None)
    if factory is not None:  # tests bind sessions to an outer transaction
        return factory()  # type: ignore[no-any-return]
    return session_scope(app.state.db)


def get_session(request: Request) -> Iterator[Session]:
    yield from _sessions(request.app)


@contextmanager
def open_session(app: Any) -> Iterator[Session]:
    """A unit of work outside the dependency system (commit on success, rollback on error): hot
    routes open it inside their one worker-thread hop instead of paying one per dependency."""
    yield from _sessions(app)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
