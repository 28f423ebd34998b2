"""The Postgres job queue (app/jobs/queue.py) against a real database, with committed transactions.

Each test commits for real (claims from several connections must see each other) and the
``clean_queue`` fixture truncates the queue tables afterwards.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import CheckConstraint, Engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex

from app.jobs import queue
from app.models import Job, JobEvent, Worker


@pytest.fixture
def engine(database) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    yield database.engine
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, workers CASCADE"))


def _enqueue(engine: Engine, kind: str = "distill", **kw: Any) -> uuid.UUID:
    with engine.begin() as conn:
        return queue.enqueue(conn, kind, {"n": 1}, **kw)


def _claim(engine: Engine, worker: str, lease: float = 60, kinds: list[str] | None = None) -> Any:
    with engine.begin() as conn:
        return queue.claim(conn, worker, lease, kinds)


def _job(engine: Engine, job_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.id == job_id)).one()


def _expire(engine: Engine, job_id: uuid.UUID) -> None:
    # Stands in for "the worker stopped renewing long ago" without sleeping through a lease.
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
                     {"id": job_id})


def test_claim_order_is_priority_then_age(engine: Engine) -> None:
    old_low = _enqueue(engine)
    high = _enqueue(engine, priority=5)
    with engine.begin() as conn:  # queued in one transaction: still claimed in queue order
        new_low_a = queue.enqueue(conn, "distill", {})
        new_low_b = queue.enqueue(conn, "distill", {})
    urgent = _enqueue(engine, priority=9)
    order = [_claim(engine, "w1").id for _ in range(5)]
    assert order == [urgent, high, old_low, new_low_a, new_low_b]
    assert _claim(engine, "w1") is None

    row = _job(engine, urgent)
    assert (row.status, row.attempts, row.lease_owner) == ("running", 1, "w1")
    assert row.started_at is not None and row.lease_expires_at > row.started_at


def test_claim_respects_kinds_and_run_after(engine: Engine) -> None:
    evaluate = _enqueue(engine, "evaluate")
    later = _enqueue(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() + interval '1 hour' WHERE id = :id"), {"id": later})
    assert _claim(engine, "w1", kinds=["distill"]) is None
    assert _claim(engine, "w1", kinds=["distill", "evaluate"]).id == evaluate
    assert _job(engine, later).status == "queued"


def test_concurrent_claims_never_share_a_job(engine: Engine) -> None:
    ids = [_enqueue(engine) for _ in range(24)]
    claimed: dict[str, list[uuid.UUID]] = {}
    start = threading.Barrier(4)

    def work(name: str) -> None:
        got: list[uuid.UUID] = []
        with engine.connect() as conn:  # one connection per worker thread
            start.wait()
            while True:
                with conn.begin():
                    row = queue.claim(conn, name, 60)
                if row is None:
                    break
                got.append(row.id)
        claimed[name] = got

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [job for got in claimed.values() for job in got]
    assert len(claimed) == 4
    assert Counter(every) == Counter(ids)  # each job exactly once
    with engine.connect() as conn:
        owners = dict(conn.execute(text("SELECT id, lease_owner FROM jobs")).all())
    for name, got in claimed.items():
        assert all(owners[j] == name for j in got)


def test_expired_lease_is_reclaimed_and_old_owner_is_refused(engine: Engine) -> None:
    job_id = _enqueue(engine)
    assert _claim(engine, "dead").id == job_id
    assert _claim(engine, "other") is None  # lease still valid
    _expire(engine, job_id)
    row = _claim(engine, "other")
    assert row.id == job_id and row.attempts == 2 and row.lease_owner == "other"
    with engine.begin() as conn:
        assert queue.heartbeat(conn, job_id, "dead", 60) == queue.HeartbeatResult(ok=False, cancel_requested=False)
        assert queue.finish(conn, job_id, "dead", "succeeded", result={"x": 1}) is False
        assert queue.fail_or_retry(conn, job_id, "dead", "boom") is None
        assert queue.release(conn, job_id, "dead") is None
        assert queue.heartbeat(conn, job_id, "other", 60, progress={"step": 3}).ok
        assert queue.finish(conn, job_id, "other", "succeeded", result={"steps": 3})
    row = _job(engine, job_id)
    assert (row.status, row.result, row.progress, row.lease_owner) == ("succeeded", {"steps": 3}, {"step": 3}, "other")
    assert row.finished_at is not None and row.lease_expires_at is None


def _events_of(engine: Engine, job_id: uuid.UUID) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.kind, r.message) for r in conn.execute(select(JobEvent.kind, JobEvent.message)
                                                          .where(JobEvent.job_id == job_id).order_by(JobEvent.id))]


def test_each_claim_issues_a_fresh_token_and_a_stale_attempt_is_refused_everywhere(engine: Engine) -> None:
    # The same worker claims the job twice (its first attempt's lease expired meanwhile): the owner check
    # alone would let attempt 1's writes through; the token refuses every one of them.
    job_id = _enqueue(engine)
    first = _claim(engine, "w1")
    _expire(engine, job_id)
    second = _claim(engine, "w1")
    assert (second.attempts, second.lease_owner) == (2, "w1")
    assert first.lease_token is not None and second.lease_token not in (None, first.lease_token)
    stale, current = first.lease_token, second.lease_token
    before = _events_of(engine, job_id)
    with engine.begin() as conn:
        assert not queue.heartbeat(conn, job_id, "w1", 600, progress={"step": 99}, token=stale).ok
        assert not queue.set_progress(conn, job_id, "w1", [{"step": 99}], token=stale).ok
        assert queue.add_event(conn, job_id, "log", "from attempt 1", token=stale) is False
        assert queue.finish(conn, job_id, "w1", "succeeded", result={"attempt": 1}, token=stale) is False
        assert queue.fail_or_retry(conn, job_id, "w1", "boom", token=stale) is None
        assert queue.release(conn, job_id, "w1", token=stale) is None
    row = _job(engine, job_id)
    assert (row.status, row.attempts, row.lease_token, row.progress, row.result) == ("running", 2, current, None, None)
    assert _events_of(engine, job_id) == before  # not one event from the stale attempt
    with engine.begin() as conn:
        assert queue.heartbeat(conn, job_id, "w1", 600, token=current).ok
        assert queue.set_progress(conn, job_id, "w1", [{"step": 1}], token=current).ok
        assert queue.add_event(conn, job_id, "log", "from attempt 2", token=current) is True
        assert queue.heartbeat(conn, job_id, "w2", 600, token=current).ok is False  # owner and token both count
        assert queue.finish(conn, job_id, "w1", "succeeded", result={"attempt": 2}, token=current)
        assert queue.add_event(conn, job_id, "log", "after the end", token=current) is False
    assert _job(engine, job_id).result == {"attempt": 2}
    assert _events_of(engine, job_id)[len(before):] == [("progress", "progress"), ("log", "from attempt 2"),
                                                         ("state", "succeeded")]


def test_a_job_handed_back_is_claimed_under_a_new_token(engine: Engine) -> None:
    job_id = _enqueue(engine, max_attempts=3)
    first = _claim(engine, "w1")
    with engine.begin() as conn:
        assert queue.release(conn, job_id, "w1", token=first.lease_token) == "queued"
    assert _job(engine, job_id).lease_token is None
    second = _claim(engine, "w1")
    with engine.begin() as conn:
        assert queue.fail_or_retry(conn, job_id, "w1", "boom", token=second.lease_token) == "queued"
        assert queue.heartbeat(conn, job_id, "w1", 60, token=second.lease_token).ok is False
        conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job_id})
    third = _claim(engine, "w1")
    assert len({first.lease_token, second.lease_token, third.lease_token}) == 3
    with engine.begin() as conn:  # attempt 2's late outcome cannot settle attempt 3's run
        assert queue.finish(conn, job_id, "w1", "failed", error="late", token=second.lease_token) is False
        assert queue.finish(conn, job_id, "w1", "succeeded", token=third.lease_token)


def test_expired_lease_on_last_attempt_fails_instead_of_running(engine: Engine) -> None:
    job_id = _enqueue(engine, max_attempts=2)
    _claim(engine, "w1")
    _expire(engine, job_id)
    assert _claim(engine, "w2").attempts == 2
    _expire(engine, job_id)
    assert _claim(engine, "w3") is None
    row = _job(engine, job_id)
    assert row.status == "failed" and row.attempts == 2
    assert "lease expired on the last attempt (worker w2 lost)" in row.error


def test_fail_or_retry_backs_off_then_fails(engine: Engine) -> None:
    job_id = _enqueue(engine, max_attempts=2)
    _claim(engine, "w1")
    with engine.begin() as conn:
        assert queue.fail_or_retry(conn, job_id, "w1", "Traceback: first") == "queued"
        delay = conn.execute(text("SELECT run_after - now() FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
    assert timedelta(seconds=1.5) < delay <= timedelta(seconds=2)  # 2**1 s after the first attempt
    assert _claim(engine, "w1") is None  # backing off
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job_id})
    assert _claim(engine, "w2").attempts == 2
    with engine.begin() as conn:
        assert queue.fail_or_retry(conn, job_id, "w2", "Traceback: second") == "failed"
    row = _job(engine, job_id)
    assert (row.status, row.error) == ("failed", "Traceback: second")
    assert [queue.backoff_seconds(n) for n in (1, 2, 3, 20)] == [2, 4, 8, queue.BACKOFF_CAP_SECONDS]


def test_release_hands_back_without_consuming_an_attempt(engine: Engine) -> None:
    job_id = _enqueue(engine)
    _claim(engine, "w1")
    with engine.begin() as conn:
        assert queue.release(conn, job_id, "w1") == "queued"
    row = _job(engine, job_id)
    assert (row.status, row.attempts, row.lease_owner) == ("queued", 0, None)
    assert _claim(engine, "w2").attempts == 1


def test_heartbeat_renews_only_for_the_owner(engine: Engine) -> None:
    job_id = _enqueue(engine)
    _claim(engine, "owner", lease=5)
    before = _job(engine, job_id).lease_expires_at
    with engine.begin() as conn:
        assert not queue.heartbeat(conn, job_id, "intruder", 600).ok
    assert _job(engine, job_id).lease_expires_at == before
    with engine.begin() as conn:
        assert queue.heartbeat(conn, job_id, "owner", 600, progress={"step": 1, "total": 10}).ok
    row = _job(engine, job_id)
    assert row.lease_expires_at > before + timedelta(seconds=500)
    assert row.progress == {"step": 1, "total": 10}


def test_cancel_queued_and_running(engine: Engine) -> None:
    queued = _enqueue(engine)
    with engine.begin() as conn:
        assert queue.request_cancel(conn, queued) == "cancelled"
        assert queue.request_cancel(conn, uuid.uuid4()) is None
    assert _job(engine, queued).finished_at is not None
    running = _enqueue(engine)
    assert _claim(engine, "w1").id == running  # the cancelled one is never claimed
    with engine.begin() as conn:
        assert queue.heartbeat(conn, running, "w1", 60).cancel_requested is False
        assert queue.request_cancel(conn, running) == "running"
        assert queue.heartbeat(conn, running, "w1", 60) == queue.HeartbeatResult(ok=True, cancel_requested=True)
        assert queue.finish(conn, running, "w1", "cancelled")
        assert queue.request_cancel(conn, running) == "cancelled"  # already final: unchanged


def test_cancelled_running_job_whose_worker_died_is_not_run_again(engine: Engine) -> None:
    job_id = _enqueue(engine)
    _claim(engine, "dead")
    with engine.begin() as conn:
        queue.request_cancel(conn, job_id)
    _expire(engine, job_id)
    assert _claim(engine, "w2") is None
    assert _job(engine, job_id).status == "cancelled"


def test_enqueue_notifies_listeners_on_commit(engine: Engine, database_url: str) -> None:
    conninfo = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
        job_id = _enqueue(engine)
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert got == [str(job_id)]


def test_events_and_worker_registry(engine: Engine) -> None:
    job_id = _enqueue(engine)
    _claim(engine, "w1")
    with engine.begin() as conn:
        queue.add_event(conn, job_id, "metric", "eval", {"loss": 1.5}, level="info")
        assert queue.set_progress(conn, job_id, "w1", [{"step": 1}, {"step": 2}]).ok
        assert not queue.set_progress(conn, job_id, "w2", [{"step": 3}]).ok
        queue.finish(conn, job_id, "w1", "succeeded")
    assert _job(engine, job_id).progress == {"step": 2}
    with engine.connect() as conn:
        kinds = conn.execute(select(JobEvent.kind, JobEvent.message).where(JobEvent.job_id == job_id)
                             .order_by(JobEvent.id)).all()
    assert [tuple(k) for k in kinds] == [("state", "queued"), ("state", "running on w1 (attempt 1/3)"),
                                         ("metric", "eval"), ("progress", "progress"), ("progress", "progress"),
                                         ("state", "succeeded")]

    with engine.begin() as conn:
        queue.register_worker(conn, "host:1:abc", host="host", pid=1, devices=[{"index": 0}], kinds=["distill"])
        queue.register_worker(conn, "host:1:abc", host="host", pid=1, devices=[], kinds=["distill"])
        queue.worker_heartbeat(conn, "host:1:abc", job_id)
        row = conn.execute(select(Worker.__table__)).one()
        assert (row.devices, row.current_job_id) == ([], job_id)
        assert queue.prune_workers(conn, 3600) == 0
        queue.remove_worker(conn, "host:1:abc")
        assert conn.execute(select(Worker.id)).all() == []


def test_partial_indexes_match_the_models(engine: Engine) -> None:
    """Autogenerate does not compare index predicates, so the drift test cannot see them: check here."""
    def indexdef(conn: Any, name: str) -> str:
        return conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": name}).scalar_one()

    with engine.connect() as conn:
        for index in Job.__table__.indexes:
            probe = f"{index.name}_probe"
            ddl = str(CreateIndex(index).compile(conn)).replace(f"{index.name} ", f"{probe} ", 1)
            conn.execute(text(ddl))
            assert indexdef(conn, probe).replace(probe, index.name) == indexdef(conn, index.name)
            conn.rollback()
    assert any(isinstance(c, CheckConstraint) for c in Job.__table__.constraints)
