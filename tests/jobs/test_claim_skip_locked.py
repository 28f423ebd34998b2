"""A claim never waits on a job another worker is claiming: ``FOR UPDATE SKIP LOCKED`` passes over the row.

With a plain ``FOR UPDATE`` claims would stay exclusive but queue up behind each other's open transactions;
the test holds one claim's transaction open and asks a second connection (with a ``lock_timeout``, so the
wrong behaviour fails instead of hanging) to claim: it must get the next job at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from app.jobs import queue


@pytest.fixture
def engine(database) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    def clean() -> None:
        with database.engine.begin() as conn:
            conn.execute(text("TRUNCATE jobs, job_events, workers CASCADE"))

    clean()  # the claims below must see only this test's jobs, whatever ran before
    yield database.engine
    clean()


def _enqueue(engine: Engine, priority: int) -> uuid.UUID:
    with engine.begin() as conn:
        return queue.enqueue(conn, "distill", {"n": 1}, priority=priority)


def test_a_claim_skips_the_row_another_claim_holds(engine: Engine) -> None:
    first = _enqueue(engine, priority=5)
    second = _enqueue(engine, priority=1)
    with engine.connect() as holder, engine.connect() as other:
        holding = holder.begin()
        held = queue.claim(holder, "w1", 60)  # its row stays locked until `holding` ends
        assert held is not None and held.id == first
        with other.begin():
            # A waiting claim would block here until `holding` ends; the lock timeout turns that into an error.
            other.execute(text("SET LOCAL lock_timeout = '3s'"))
            row = queue.claim(other, "w2", 60)
        assert row is not None and row.id == second
        holding.rollback()
    with engine.begin() as conn:  # the rolled-back claim left the first job queued for the next worker
        again = queue.claim(conn, "w3", 60)
    assert again is not None and again.id == first


def test_a_claim_with_every_row_held_returns_none_without_waiting(engine: Engine) -> None:
    only = _enqueue(engine, priority=0)
    with engine.connect() as holder, engine.connect() as other:
        holding = holder.begin()
        held = queue.claim(holder, "w1", 60)
        assert held is not None and held.id == only
        with other.begin():
            other.execute(text("SET LOCAL lock_timeout = '3s'"))
            assert queue.claim(other, "w2", 60) is None
        holding.commit()
