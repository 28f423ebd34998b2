"""Fencing (issue #13 item 8): a job attempt that lost its lease writes nothing more, to the database or to files.

The end-to-end test pauses a real worker (SIGSTOP) in the middle of a distillation run, past its lease, lets a
second worker claim attempt 2 and resume from the checkpoint, then wakes the first (SIGCONT): the first stops at
once and nothing it writes lands after attempt 2 started (metrics lines, checkpoints by attempt, progress events
by attempt, file mtimes), and the job ends from attempt 2. The units below it pin the pieces: the renew deadline,
the heartbeat that stops a job before its lease expires, the worker's and the ranks' fences, and a checkpoint
that an attempt without its lease never publishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.jobs import queue
from app.jobs.queue import HeartbeatResult
from contract.rundir import RunDir, list_checkpoints, read_metrics
from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from worker.fence import RENEW_DEADLINE, FileFence, Lease, LeaseFence, LeaseLost, Unfenced, write_lease_file
from worker.heartbeat import Heartbeat

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 4.0
STEP_S = 0.25


def slow_steps() -> None:
    """Worker plugin (``tests.jobs.test_fencing:slow_steps``): each training step also sleeps
    ``FENCE_TEST_STEP_S`` seconds, so a tiny model trains slowly without taking the CPU."""
    from worker.training.trainer import Trainer

    pause = float(os.environ.get("FENCE_TEST_STEP_S", "0"))
    step = Trainer.step

    def slow(self: Trainer) -> dict[str, Any]:
        time.sleep(pause)
        return step(self)

    Trainer.step = slow  # type: ignore[method-assign]


def _spawn(database_url: str, settings: Any, models_root: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DISTILLERY_DATABASE_URL": database_url, "DISTILLERY_DATA_DIR": str(settings.data_dir),
           "DISTILLERY_MODELS_ROOT": str(models_root), "DISTILLERY_WORKER_KINDS": "distill",
           "DISTILLERY_WORKER_LEASE_SECONDS": str(LEASE_S), "DISTILLERY_WORKER_POLL_INTERVAL": "0.3",
           "DISTILLERY_WORKER_PLUGINS": "tests.jobs.test_fencing:slow_steps", "FENCE_TEST_STEP_S": str(STEP_S),
           "OMP_NUM_THREADS": "1", "DISTILLERY_LOG_LEVEL": "INFO"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _running(proc: subprocess.Popen[bytes], log: Path, check: Callable[[], Any]) -> Callable[[], Any]:
    def wrapped() -> Any:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()}")
        return check()

    return wrapped


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_paused_worker_never_writes_after_its_successor_started(committed, jobs_settings, database_url,  # type: ignore[no-untyped-def]
                                                                 models_root, database, tmp_path) -> None:
    client, engine = committed, database.engine
    dataset = make_dataset(client, 6)
    spec = distill_spec(dataset["id"], training={"max_steps": 30, "checkpoint_every": 1, "eval_max_examples": 0})
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    out = jobs_settings.job_dir(job_id)

    def job() -> dict[str, Any]:
        return client.get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]

    def progress(after: int = 0) -> list[dict[str, Any]]:
        items = client.get(f"/v1/jobs/{job_id}/events", params={"kind": "progress", "cursor": after,
                                                                 "limit": 1000}).json()["items"]
        return [{**e["data"], "event_id": e["id"]} for e in items]

    def worker_job(pid: int) -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT current_job_id FROM workers WHERE id LIKE :w"),
                                {"w": f"%:{pid}:%"}).one()[0]

    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _spawn(database_url, jobs_settings, models_root, first_log)
    second = None
    try:
        wait_for("attempt 1 to checkpoint step 3", _running(first, first_log, lambda: (
            list_checkpoints(out) and list_checkpoints(out)[-1][0] >= 3)), timeout=60, interval=0.05)
        first.send_signal(signal.SIGSTOP)  # a long GC, a frozen VM: its lease runs out, it does not know
        second = _spawn(database_url, jobs_settings, models_root, second_log)
        wait_for("attempt 2 to claim the job", _running(second, second_log, lambda: job()["attempts"] == 2),
                 timeout=60, interval=0.1)
        resumed = job()["progress"]
        wait_for("attempt 2 to train", _running(second, second_log, lambda: [
            p for p in progress() if p["attempt"] == 2 and p["step"] >= 2 + min(
                q["step"] for q in progress() if q["attempt"] == 2)]), timeout=60, interval=0.1)
        first.send_signal(signal.SIGCONT)
        wait_for("the first worker to drop the job", lambda: worker_job(first.pid) is None, timeout=15)
        wait_for("attempt 2 to succeed", _running(second, second_log, lambda: job()["status"] == "succeeded"),
                 timeout=90, interval=0.2)
    finally:
        _end(first)
        _end(second)

    body = job()
    assert (body["status"], body["attempts"]) == ("succeeded", 2), body
    assert f":{second.pid}:" in body["lease"]["owner"]
    result = body["result"]
    assert result["steps"] == 30 and result["resumed_from_step"] >= 3, result
    assert resumed is None or resumed.get("attempt") == 1  # what attempt 1 had reported when attempt 2 took over
    assert "lease not renewed before its deadline" in first_log.read_text()

    # When attempt 2 started (its claim, by the database clock: the same host's clock as the files').
    with engine.connect() as conn:
        claim_id, claim_ts = conn.execute(text(
            "SELECT id, ts FROM job_events WHERE job_id = :id AND message LIKE 'running on % (attempt 2/%'"),
            {"id": job_id}).one()
    started = claim_ts.timestamp()

    # Metrics: one line per step, in order (a stale append after attempt 2 trimmed the file would repeat a step).
    steps = [row["step"] for row in read_metrics(RunDir(out).metrics)[0]]
    assert steps == list(range(1, 31)), steps
    # Progress events after attempt 2 started are all attempt 2's, each step once.
    later = progress(claim_id)
    assert {p["attempt"] for p in later} == {2}
    assert [p["step"] for p in later] == list(range(result["resumed_from_step"] + 1, 31))
    # Checkpoints: every one left is attempt 2's; nothing of attempt 1 written after attempt 2 started.
    metas = [json.loads((path / "meta.json").read_text()) for _, path in list_checkpoints(out)]
    assert metas and {m["attempt"] for m in metas} == {2}
    for path in out.rglob("*"):
        if not path.is_file() or path.stat().st_mtime < started:
            continue
        rel = path.relative_to(out)
        if rel.parts[0] == "checkpoints":
            meta = json.loads((out / rel.parts[0] / rel.parts[1] / "meta.json").read_text())
            assert meta["attempt"] == 2, rel
        else:
            assert rel.parts[0] in ("final", "metrics.jsonl", "loss_curves.png"), rel
    assert not [p for p in out.rglob(".*") if p.name != ".leases"]  # no scratch left behind


# -- the pieces -------------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _lease(lease_seconds: float = 60.0, *, clock: Callable[[], float] = time.monotonic,
           acquired_at: float | None = None) -> Lease:
    return Lease(uuid.uuid4(), "w", uuid.uuid4(), 1, lease_seconds, clock=clock,
                 acquired_at=clock() if acquired_at is None else acquired_at)


def test_the_renew_deadline_comes_before_the_lease_expires() -> None:
    clock = _Clock(100.0)
    lease = _lease(60.0, clock=clock)
    clock.now = 100.0 + 60 * RENEW_DEADLINE - 0.01
    assert lease.held()
    clock.now = 150.0  # 5/6 of the lease: 10 s before the database lets anyone else claim the job
    assert not lease.held()
    lease.renewed(sent_at=140.0)  # an answer that arrives past the deadline does not revive the attempt
    assert not lease.held()

    clock.now = 100.0
    lease = _lease(60.0, clock=clock)
    clock.now = 140.0
    lease.renewed(sent_at=139.0)  # counted from when it was sent, not answered
    clock.now = 139.0 + 50.0 - 0.01
    assert lease.held()
    lease.mark_lost()
    assert not lease.held()


class _Writer:
    def __init__(self, answer: str) -> None:
        self.answer, self.calls = answer, 0

    def write(self, *args: Any, **kwargs: Any) -> HeartbeatResult:
        self.calls += 1
        if self.answer == "unreachable":
            raise OperationalError("UPDATE jobs", {}, Exception("connection refused"))
        return HeartbeatResult(ok=self.answer == "ok", cancel_requested=False)

    def close(self) -> None:
        pass


class _Store:
    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def lease_writer(self) -> _Writer:
        return self.writer


def test_a_heartbeat_that_cannot_renew_stops_the_job_at_its_deadline_and_writes_no_more() -> None:
    writer = _Writer("unreachable")
    lease = _lease(0.9)
    hb = Heartbeat(_Store(writer), lease, interval=0.05)  # type: ignore[arg-type]
    hb.start()
    try:
        assert not hb.should_abort()  # failing renewals alone do not stop it: the deadline does
        assert hb.abort.wait(10)
        assert not lease.held() and lease.remaining() <= 0 and not lease.lost
        calls = writer.calls
        time.sleep(0.3)
        assert writer.calls == calls and hb.should_abort()
    finally:
        hb.stop()


def test_a_refused_token_stops_the_job_at_once(tmp_path: Path) -> None:
    lease_file = tmp_path / ".leases" / "t.json"
    lease = _lease(60.0)
    write_lease_file(lease_file, lease)  # published for the ranks (LeaseFence.rank_env)
    hb = Heartbeat(_Store(_Writer("refused")), lease, interval=0.05, lease_file=lease_file)  # type: ignore[arg-type]
    hb.start()
    try:
        assert hb.abort.wait(10)
        assert lease.lost and hb.lease_lost
    finally:
        hb.stop()
    assert lease_file.exists()  # a lost attempt removes nothing (its successor does)


def test_the_worker_fence_verifies_in_the_database_before_it_promotes(tmp_path: Path) -> None:
    answers = iter([True, False])
    calls: list[int] = []

    def renew() -> bool:
        calls.append(1)
        return next(answers)

    clock = _Clock(0.0)
    lease = _lease(60.0, clock=clock, acquired_at=0.0)
    fence = LeaseFence(lease, renew)
    dst = tmp_path / "report.json"
    scratch = fence.scratch(dst)
    assert scratch.parent == tmp_path and scratch.name.startswith(".report.json.attempt-")
    scratch.write_text("1")
    fence.promote(scratch, dst)
    assert dst.read_text() == "1" and not scratch.exists() and len(calls) == 1

    scratch = fence.scratch(dst)
    scratch.write_text("2")
    with pytest.raises(LeaseLost, match="another attempt holds it"):
        fence.promote(scratch, dst)  # the database refused the token
    assert dst.read_text() == "1" and not scratch.exists() and lease.lost

    lease = _lease(60.0, clock=clock, acquired_at=0.0)
    fence = LeaseFence(lease, renew)
    clock.now = 50.0  # past the renew deadline: refused without asking the database
    with pytest.raises(LeaseLost, match="could not be renewed in time"):
        fence.check()
    assert len(calls) == 2


def test_the_worker_fence_trusts_its_deadline_when_the_database_is_unreachable(tmp_path: Path) -> None:
    def unreachable() -> bool:
        raise OperationalError("UPDATE jobs", {}, Exception("connection refused"))

    fence = LeaseFence(_lease(60.0), unreachable, verify_errors=(OperationalError,))
    scratch = fence.scratch(tmp_path / "final")
    scratch.mkdir()
    (scratch / "model.safetensors").write_text("new")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "old.bin").write_text("old")
    fence.promote(scratch, tmp_path / "final")  # a directory is swapped whole
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_the_ranks_fence_follows_the_lease_file(tmp_path: Path) -> None:
    clock = _Clock(time.monotonic())
    lease = _lease(60.0, clock=clock)
    path = RunDir(tmp_path).lease_file(lease.token)
    fence = LeaseFence(lease, lambda: True, lease_file=path)
    env = fence.rank_env()
    assert env == {"DISTILLERY_LEASE_FILE": str(path), "DISTILLERY_LEASE_ATTEMPT": "1"}
    from worker.fence import fence_from_env

    rank = fence_from_env(env)
    assert isinstance(rank, FileFence) and isinstance(fence_from_env({}), Unfenced)
    rank.check()  # rank_env published it
    path.unlink()
    with pytest.raises(LeaseLost, match="no readable lease"):
        rank.check()
    write_lease_file(path, lease)
    rank.check()
    assert rank.stamp() == {"lease_token": str(lease.token), "attempt": 1}
    clock.now += 60.0  # the worker stopped renewing: its lease's deadline passes
    write_lease_file(path, lease)  # a stale heartbeat publishes nothing past the deadline
    data = json.loads(path.read_text())
    data["valid_until"] = time.time() - 1
    path.write_text(json.dumps(data))
    with pytest.raises(LeaseLost, match="expired"):
        rank.check()
    data.update(token=str(uuid.uuid4()), valid_until=time.time() + 60)  # the file of another attempt
    path.write_text(json.dumps(data))
    with pytest.raises(LeaseLost):
        rank.check()


def test_a_checkpoint_is_published_only_while_the_lease_is_held(tmp_path: Path) -> None:
    from worker.training import checkpoint as ckpt

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "weighting": torch.nn.Linear(1, 1),
             "sampler_state": {}, "meta": {"job_id": "j"}, "keep": 3}
    held = threading.Event()
    held.set()
    clock = _Clock(0.0)
    lease = _lease(60.0, clock=clock, acquired_at=0.0)
    fence = LeaseFence(lease, held.is_set)
    path = ckpt.save_checkpoint(tmp_path, 1, fence=fence, **parts)  # type: ignore[arg-type]
    assert ckpt.read_meta(path)["attempt"] == 1 and ckpt.read_meta(path)["lease_token"] == str(lease.token)

    held.clear()  # the next renewal is refused: another attempt took the job meanwhile
    with pytest.raises(LeaseLost):
        ckpt.save_checkpoint(tmp_path, 2, fence=fence, **parts)  # type: ignore[arg-type]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    assert sorted(p.name for p in RunDir(tmp_path).checkpoints.iterdir()) == ["step-00000001"]  # no scratch left
    with pytest.raises(LeaseLost):
        ckpt.append_row(RunDir(tmp_path).metrics, {"step": 2}, fence)
    with pytest.raises(LeaseLost):
        ckpt.write_json(RunDir(tmp_path).eval_report, {"x": 1}, fence)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]


@pytest.mark.parametrize("ended", ["failed by its attempt", "cancelled, its worker lost"])
def test_a_retried_job_keeps_no_token_and_its_old_attempt_writes_nothing(committed, database, ended: str) -> None:  # type: ignore[no-untyped-def]
    client, engine = committed, database.engine
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, "distill", {"resources": {"device": "cpu"}}, max_attempts=1)
        old = queue.claim(conn, "w1", 60, ["distill"])
    assert old is not None and old.id == job_id and old.lease_token is not None
    stale = old.lease_token
    with engine.begin() as conn:
        if ended == "failed by its attempt":
            assert queue.finish(conn, job_id, "w1", "failed", error="boom", token=stale)
        else:  # cancel asked, then the worker went silent past its lease
            assert queue.request_cancel(conn, job_id) == "running"
            conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
                         {"id": job_id})
            assert queue.claim(conn, "w2", 60, ["distill"]) is None  # settles it: cancelled
    r = client.post(f"/v1/jobs/{job_id}/retry")
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["lease"]["owner"], r.json()["waiting_reason"]) == (
        "queued", None, "no live worker")

    def token() -> Any:
        with engine.connect() as conn:
            return conn.execute(text("SELECT lease_token FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()

    def stale_writes_refused() -> None:
        with engine.begin() as conn:
            assert queue.heartbeat(conn, job_id, "w1", 60, {"step": 9}, token=stale).ok is False
            assert queue.set_progress(conn, job_id, "w1", [{"step": 9}], token=stale).ok is False
            assert queue.add_event(conn, job_id, "log", "late line", token=stale) is False
            assert queue.finish(conn, job_id, "w1", "succeeded", {"late": True}, token=stale) is False
            assert queue.fail_or_retry(conn, job_id, "w1", "late", token=stale) is None
            assert queue.release(conn, job_id, "w1", token=stale) is None

    assert token() is None  # the old attempt's token does not outlive its attempt
    stale_writes_refused()
    with engine.begin() as conn:  # the same worker claims the retried job: only the token tells the attempts apart
        new = queue.claim(conn, "w1", 60, ["distill"])
    assert new is not None and new.attempts == 1 and new.lease_token not in (None, stale)
    assert token() == new.lease_token
    stale_writes_refused()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["progress"], job["result"]) == ("running", None, None)
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]
    assert not [e for e in events if e["kind"] in ("log", "progress")]
    with engine.begin() as conn:
        assert queue.finish(conn, job_id, "w1", "succeeded", {"ok": True}, token=new.lease_token)


def _record(i: int, split: str) -> dict[str, Any]:
    reason, action = f"<think>\nLook up item {i}.\n</think>\n", f"Action: finish[{i}]"
    return {
        "id": f"r{i}", "tools": None, "complexity": i / 4, "split": split,
        "messages": [{"role": "user", "text": f"What is item {i}?"}, {"role": "assistant", "text": reason + action}],
        "spans": [{"message": 1, "start": 0, "end": len(reason), "kind": "reason"},
                  {"message": 1, "start": len(reason), "end": len(reason + action), "kind": "action"}],
    }


def test_a_rank_writes_only_while_its_lease_file_says_the_lease_is_held(models_root: Path, tmp_path: Path) -> None:
    """The ranks' side, without torchrun: the trainer command under the lease file a launcher names."""
    from contract.rundir import ExitCode

    config, data, out = tmp_path / "config.json", tmp_path / "data.jsonl", tmp_path / "run"
    config.write_text(json.dumps({"student_model": str(models_root / "student"), "resources": {"device": "cpu"},
                                  "training": {"max_steps": 2, "micro_batch_size": 2, "max_seq_len": 64,
                                               "checkpoint_every": 1, "eval_max_examples": 0}}))
    data.write_text("".join(json.dumps(_record(i, "train")) + "\n" for i in range(4)))
    token = uuid.uuid4()
    lease_file = RunDir(out).lease_file(token)
    lease_file.parent.mkdir(parents=True)
    env = {**os.environ, "DISTILLERY_LEASE_FILE": str(lease_file), "DISTILLERY_LEASE_ATTEMPT": "3",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "worker.training.train", "--config", str(config), "--data", str(data),
               "--out", str(out)]

    def train(valid_for: float) -> subprocess.CompletedProcess[str]:
        lease_file.write_text(json.dumps({"token": str(token), "attempt": 3, "valid_until": time.time() + valid_for}))
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    expired = train(-1.0)  # the worker stopped renewing: the rank refuses its first write
    assert expired.returncode == ExitCode.FAILED and "LeaseLost" in expired.stderr, expired.stderr
    assert sorted(p.name for p in out.iterdir()) == [".leases"]  # no metrics, no checkpoint, no scratch
    held = train(600.0)
    assert held.returncode == ExitCode.COMPLETED, held.stderr
    metas = [json.loads((path / "meta.json").read_text()) for _, path in list_checkpoints(out)]
    assert [(m["step"], m["attempt"], m["lease_token"]) for m in metas] == [(1, 3, str(token)), (2, 3, str(token))]
    assert (out / "final" / "config.json").is_file()
