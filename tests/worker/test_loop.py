"""The worker loop (worker/loop.py) end to end: real Postgres, real threads and real processes.

Test handlers (kinds ``test_*``) are registered in-process by a fixture, and in ``python -m
worker`` subprocesses through ``DISTILLERY_WORKER_PLUGINS`` pointing at ``install_test_handlers``.
``test_count`` is a resumable job: it counts steps, checkpointing each one in its out_dir through the
attempt's fence (like the trainer does), so a lost lease stops it at its next step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError

from app.jobs import queue
from app.models import Job, JobEvent
from worker.context import JobContext
from worker.handlers import HANDLERS
from worker.loop import run_worker, start_background_worker
from worker.store import LeaseWriter, Store

ROOT = Path(__file__).resolve().parents[2]
TEST_KINDS = ("test_noop", "test_fail", "test_count")


def _noop(ctx: JobContext) -> dict[str, Any]:
    ctx.log("hello from the handler")
    return {"ok": True, "attempt": ctx.attempt}


def _fail(ctx: JobContext) -> dict[str, Any]:
    raise RuntimeError("handler exploded")


def _count(ctx: JobContext) -> dict[str, Any]:
    steps = int(ctx.config["steps"])
    checkpoint = ctx.out_dir / "checkpoint.json"
    start = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else 0
    step_s = ctx.config.get("resume_step_s", 0.0) if start else ctx.config.get("step_s", 0.0)
    for step in range(start, steps):
        if ctx.should_stop():
            return {"status": "stopped", "step": step}
        time.sleep(step_s)
        partial = ctx.fence.scratch(checkpoint)  # atomic, like real checkpoints: kill -9 may land mid-write
        partial.write_text(json.dumps({"step": step + 1, "attempt": ctx.attempt}))
        ctx.fence.promote(partial, checkpoint)
        ctx.report_progress({"step": step + 1, "total": steps})
    return {"status": "completed", "steps": steps, "resumed_from": start, "attempt": ctx.attempt}


def install_test_handlers() -> None:
    """Plugin entry point (``DISTILLERY_WORKER_PLUGINS=tests.worker.test_loop:install_test_handlers``)."""
    HANDLERS.update({"test_noop": _noop, "test_fail": _fail, "test_count": _count})


@pytest.fixture
def engine(database) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    install_test_handlers()
    yield database.engine
    for kind in TEST_KINDS:
        HANDLERS.pop(kind, None)
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, workers, datasets CASCADE"))


def _enqueue(engine: Engine, kind: str, config: dict[str, Any] | None = None, **kw: Any) -> uuid.UUID:
    with engine.begin() as conn:
        return queue.enqueue(conn, kind, config or {}, **kw)


def _job(engine: Engine, job_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.id == job_id)).one()


def _events(engine: Engine, job_id: uuid.UUID, kind: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(JobEvent.__table__).where(JobEvent.job_id == job_id, JobEvent.kind == kind)
                            .order_by(JobEvent.id)).all()


def _wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _progress_step(engine: Engine, job_id: uuid.UUID) -> int:
    row = _job(engine, job_id)
    return int((row.progress or {}).get("step", 0)) if row.status == "running" else 0


def test_run_once_runs_a_job_to_success(engine: Engine, database_url: str, settings) -> None:  # type: ignore[no-untyped-def]
    job_id = _enqueue(engine, "test_noop")
    assert run_worker(database_url, settings, once=True, kinds=["test_noop"], worker_id="w-once") == 0
    row = _job(engine, job_id)
    assert (row.status, row.result, row.attempts, row.lease_owner) == ("succeeded", {"ok": True, "attempt": 1}, 1,
                                                                      "w-once")
    assert [e.message for e in _events(engine, job_id, "log")] == ["hello from the handler"]
    assert (settings.data_dir / "jobs" / str(job_id)).is_dir()
    with engine.connect() as conn:  # the worker unregistered itself
        assert conn.execute(text("SELECT count(*) FROM workers")).scalar() == 0
    assert run_worker(database_url, settings, once=True, kinds=["test_noop"]) == 0  # nothing queued: returns


def test_raising_handler_is_retried_then_failed_with_traceback(engine: Engine, database_url: str, settings) -> None:  # type: ignore[no-untyped-def]
    job_id = _enqueue(engine, "test_fail", max_attempts=2)
    run_worker(database_url, settings, once=True, kinds=["test_fail"])
    row = _job(engine, job_id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert "Traceback" in row.error and "RuntimeError: handler exploded" in row.error
    assert row.run_after > row.updated_at  # backing off
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job_id})
    run_worker(database_url, settings, once=True, kinds=["test_fail"])
    row = _job(engine, job_id)
    assert (row.status, row.attempts) == ("failed", 2)
    assert "RuntimeError: handler exploded" in row.error and row.finished_at is not None


def test_distill_without_its_dataset_fails_at_once(engine: Engine, database_url: str, settings) -> None:  # type: ignore[no-untyped-def]
    dataset_id = uuid.uuid4()
    job_id = _enqueue(engine, "distill", {"dataset_id": str(dataset_id)})
    run_worker(database_url, settings, once=True, kinds=["distill"])
    row = _job(engine, job_id)
    assert (row.status, row.attempts) == ("failed", 1)  # permanent: not retried
    assert f"dataset {dataset_id} not found" in row.error


def _claimed_once(engine: Engine, worker_id: str) -> bool:
    """The worker has finished a claim: each claim marks its row alive in its own transaction, after the one
    that registered it (both stamp ``now()``, the transaction's start)."""
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM workers WHERE id = :w AND last_heartbeat_at > started_at"),
                                 {"w": worker_id}).scalar())


def test_notify_wakes_a_waiting_worker_and_stop_hands_back(engine: Engine, database_url: str, settings) -> None:  # type: ignore[no-untyped-def]
    stop = start_background_worker(database_url, settings, kinds=["test_noop", "test_count"], poll_interval=30,
                                   worker_id="w-notify")
    try:
        # Enqueue only once its first (empty) claim is done: from then on it sleeps on LISTEN for 30 s, so a job
        # it runs within the 10 s below was delivered by the NOTIFY, not found by that claim.
        _wait_for("the worker's first claim", lambda: _claimed_once(engine, "w-notify"))
        job_id = _enqueue(engine, "test_noop")
        _wait_for("the job to succeed via NOTIFY", lambda: _job(engine, job_id).status == "succeeded", timeout=10)

        long_job = _enqueue(engine, "test_count", {"steps": 10_000, "step_s": 0.01})
        _wait_for("progress", lambda: _progress_step(engine, long_job) >= 2)
    finally:
        stop()
    row = _job(engine, long_job)
    assert (row.status, row.attempts, row.lease_owner) == ("queued", 0, None)  # handed back, attempt not used
    assert "handed back" in _events(engine, long_job, "state")[-1].message
    assert _events(engine, long_job, "progress")


def test_cancel_stops_a_running_job(engine: Engine, database_url: str, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    job_id = _enqueue(engine, "test_count", {"steps": 10_000, "step_s": 0.01})
    # The lease (60 s) renews every 20 s, but the progress writes (about every second) see the flag too.
    stop = start_background_worker(database_url, settings, kinds=["test_count"], poll_interval=30)
    try:
        _wait_for("progress", lambda: _progress_step(engine, job_id) >= 2)
        with engine.begin() as conn:
            assert queue.request_cancel(conn, job_id) == "running"
        _wait_for("the cancel", lambda: _job(engine, job_id).status == "cancelled", timeout=10)
    finally:
        stop()
    row = _job(engine, job_id)
    assert row.result["status"] == "stopped" and 0 < row.result["step"] < 10_000


def _worker_job(engine: Engine, worker_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT current_job_id FROM workers WHERE id = :w"), {"w": worker_id}).one()[0]


def test_a_worker_whose_lease_is_taken_over_stops_and_writes_nothing_more(engine: Engine, database_url: str,  # type: ignore[no-untyped-def]
                                                                          settings) -> None:
    job_id = _enqueue(engine, "test_count", {"steps": 10_000, "step_s": 0.02})
    stop = start_background_worker(database_url, settings, kinds=["test_count"], poll_interval=0.2,
                                   worker_id="w-stale")
    checkpoint = settings.data_dir / "jobs" / str(job_id) / "checkpoint.json"
    try:
        _wait_for("progress", lambda: _progress_step(engine, job_id) >= 3)
        with engine.begin() as conn:  # its lease "expires" and another worker takes the job, in one transaction
            conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
                         {"id": job_id})
            thief = queue.claim(conn, "w-thief", 60, ["test_count"])
        assert thief is not None and thief.id == job_id
        with engine.connect() as conn:
            taken_at = conn.execute(select(func.max(JobEvent.id))).scalar()
        # The stale attempt's next write is refused (its next step's checkpoint promotion, its next progress
        # write): it stops by itself, at once, and its worker is free again.
        _wait_for("the stale attempt to stop", lambda: _worker_job(engine, "w-stale") is None, timeout=10)
        seen = checkpoint.read_text()
        time.sleep(0.3)
        assert checkpoint.read_text() == seen  # nothing more from the stale attempt
    finally:
        stop()
    row = _job(engine, job_id)
    assert (row.status, row.attempts, row.lease_owner, row.lease_token) == ("running", 2, "w-thief", thief.lease_token)
    assert row.result is None and row.error is None
    with engine.connect() as conn:
        after = conn.execute(select(JobEvent.kind, JobEvent.message).where(JobEvent.job_id == job_id,
                                                                           JobEvent.id > taken_at)).all()
    assert after == []  # no progress, log or state event from the stale attempt
    assert json.loads(seen)["attempt"] == 1


def test_a_lease_that_cannot_be_renewed_in_time_stops_the_job_and_hands_it_back(  # type: ignore[no-untyped-def]
        engine: Engine, database_url: str, settings, monkeypatch) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection unexpectedly"))

    # Renewals fail (the heartbeat's connection and the fence's); the rest of the database still answers.
    monkeypatch.setattr(LeaseWriter, "write", unreachable)
    monkeypatch.setattr(Store, "renew", unreachable)
    job_id = _enqueue(engine, "test_count", {"steps": 10_000, "step_s": 0.02})
    assert run_worker(database_url, settings, once=True, kinds=["test_count"], lease_seconds=1.5,
                      worker_id="w-cut") == 0
    row = _job(engine, job_id)
    # Stopped at its renew deadline (5/6 of the lease), while the token still held the job: handed back with
    # the attempt given back, so a successor resumes from the checkpoint at once.
    assert (row.status, row.attempts, row.lease_owner, row.lease_token) == ("queued", 0, None, None)
    assert _events(engine, job_id, "state")[-1].message == "handed back: lease not renewed in time"
    saved = json.loads((settings.data_dir / "jobs" / str(job_id) / "checkpoint.json").read_text())
    assert 0 < saved["step"] < 10_000


def _spawn_worker(database_url: str, settings, log: Path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "DISTILLERY_DATABASE_URL": database_url,
        "DISTILLERY_DATA_DIR": str(settings.data_dir),
        "DISTILLERY_WORKER_PLUGINS": "tests.worker.test_loop:install_test_handlers",
        "DISTILLERY_WORKER_KINDS": "test_count",
        "DISTILLERY_WORKER_LEASE_SECONDS": "2",
        "DISTILLERY_WORKER_POLL_INTERVAL": "0.5",
    }
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _running_under(engine: Engine, job_id: uuid.UUID, proc: subprocess.Popen[bytes], log: Path) -> None:
    def check() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()}")
        return _progress_step(engine, job_id) >= 3

    _wait_for("the subprocess worker to make progress", check)


def test_sigterm_hands_the_job_back_and_exits_0(engine: Engine, database_url: str, settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    job_id = _enqueue(engine, "test_count", {"steps": 10_000, "step_s": 0.02})
    log = tmp_path / "worker.log"
    proc = _spawn_worker(database_url, settings, log)
    try:
        _running_under(engine, job_id, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    row = _job(engine, job_id)
    assert (row.status, row.attempts, row.lease_owner) == ("queued", 0, None), log.read_text()
    checkpoint = json.loads((settings.data_dir / "jobs" / str(job_id) / "checkpoint.json").read_text())
    assert checkpoint["step"] >= 3
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM workers")).scalar() == 0


def test_killed_worker_job_is_reclaimed_after_lease_expiry_and_resumed(engine: Engine, database_url: str, settings,  # type: ignore[no-untyped-def]
                                                                      tmp_path) -> None:
    job_id = _enqueue(engine, "test_count", {"steps": 500, "step_s": 0.02, "resume_step_s": 0.0})
    log = tmp_path / "worker.log"
    proc = _spawn_worker(database_url, settings, log)
    try:
        _running_under(engine, job_id, proc, log)
        dead_owner = _job(engine, job_id).lease_owner
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_worker(database_url, settings, once=True, kinds=["test_count"]) == 0  # lease still valid
    assert _job(engine, job_id).status == "running"
    with engine.connect() as conn:
        _wait_for("the lease to expire",
                  lambda: conn.execute(text("SELECT lease_expires_at < clock_timestamp() FROM jobs WHERE id = :id"),
                                       {"id": job_id}).scalar(), timeout=10)
    assert run_worker(database_url, settings, once=True, kinds=["test_count"], worker_id="rescuer") == 0
    row = _job(engine, job_id)
    assert (row.status, row.attempts, row.lease_owner) == ("succeeded", 2, "rescuer")
    assert dead_owner != "rescuer" and row.result["resumed_from"] >= 3 and row.result["attempt"] == 2


def _record(i: int, split: str) -> dict[str, Any]:
    reason, action = f"<think>\nLook up item {i}.\n</think>\n", f"Action: finish[{i}]"
    return {
        "id": f"r{i}", "tools": None, "complexity": i / 4, "split": split,
        "messages": [{"role": "user", "text": f"What is item {i}?"}, {"role": "assistant", "text": reason + action}],
        "spans": [{"message": 1, "start": 0, "end": len(reason), "kind": "reason"},
                  {"message": 1, "start": len(reason), "end": len(reason + action), "kind": "action"}],
    }


def _insert_dataset(engine: Engine, records: list[dict[str, Any]]) -> uuid.UUID:
    """A dataset snapshot holding ``records`` (rows as POST /v1/datasets would write them)."""
    dataset_id = uuid.uuid4()
    n_eval = sum(r["split"] == "eval" for r in records)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO datasets (id, name, filter, statuses, eval_fraction, seed, dedupe, n_items, n_train,"
            " n_eval, content_sha256, stats)"
            " VALUES (:id, 'loop', '{}', '{approved}', 0.2, 0, false, :n, :n - :e, :e, '', '{}')"),
            {"id": dataset_id, "n": len(records), "e": n_eval})
        for position, r in enumerate(records):
            conn.execute(text(
                "INSERT INTO dataset_items (dataset_id, position, trajectory_id, span_revision, split, content_sha256,"
                " complexity_score, complexity, messages, spans, tools, source, outcome) VALUES (:d, :p, :t, 1, :split,"
                " '', :c, :c, CAST(:m AS jsonb), CAST(:s AS jsonb), NULL, 'test', 'unknown')"),
                {"d": dataset_id, "p": position, "t": uuid.uuid4(), "split": r["split"], "c": r["complexity"],
                 "m": json.dumps(r["messages"]), "s": json.dumps(r["spans"])})
    return dataset_id


def test_distill_job_trains_from_its_dataset(engine: Engine, database_url: str, settings,  # type: ignore[no-untyped-def]
                                             tiny_model_dir: Path) -> None:
    dataset_id = _insert_dataset(engine, [_record(i, "eval" if i == 4 else "train") for i in range(5)])
    config = {
        "student_model": str(tiny_model_dir), "resources": {"device": "cpu"},
        "training": {"max_steps": 2, "micro_batch_size": 2, "max_seq_len": 64, "checkpoint_every": 0},
    }
    job_id = _enqueue(engine, "distill", config, dataset_id=dataset_id)
    assert run_worker(database_url, settings, once=True, kinds=["distill"]) == 0
    row = _job(engine, job_id)
    assert row.status == "succeeded", row.error
    assert (row.result["status"], row.result["steps"]) == ("completed", 2)
    assert Path(row.result["paths"]["final_model"]).is_dir()
    assert row.progress["step"] == 2 and row.progress["total"] == 2
    assert [e.data["step"] for e in _events(engine, job_id, "progress")] == [1, 2]


def test_a_stored_config_that_does_not_validate_fails_at_once(engine: Engine, database_url: str,  # type: ignore[no-untyped-def]
                                                             settings, tiny_model_dir: Path) -> None:
    # Written with the queue directly: the API would refuse it at submit time.
    dataset_id = _insert_dataset(engine, [_record(i, "train") for i in range(2)])
    config = {"student_model": str(tiny_model_dir), "resources": {"device": "cpu"}, "training": {"max_stepz": 2}}
    job_id = _enqueue(engine, "distill", config, dataset_id=dataset_id, max_attempts=3)
    assert run_worker(database_url, settings, once=True, kinds=["distill"]) == 0
    row = _job(engine, job_id)
    assert (row.status, row.attempts) == ("failed", 1)  # permanent: not retried
    assert "ValidationError" in row.error and "max_stepz" in row.error
