"""Fault tolerance of real distill jobs: a worker killed with SIGKILL mid-training (another worker takes
the job after its lease expires and resumes from the checkpoint), cancel of a running job, a job that
fails for a reason another attempt may not meet (retried with backoff, failed after max_attempts, never
more), and a job whose model cannot load (failed at once: retrying cannot fix it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from worker.loop import run_worker, start_background_worker

ROOT = Path(__file__).resolve().parents[2]
SLOW = {"max_steps": 14, "checkpoint_every": 2, "micro_batch_size": 4, "eval_max_examples": 0}


def _spawn_worker(database_url: str, settings: Any, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DISTILLERY_DATABASE_URL": database_url, "DISTILLERY_DATA_DIR": str(settings.data_dir),
           "DISTILLERY_WORKER_KINDS": "distill", "DISTILLERY_WORKER_LEASE_SECONDS": "2",
           "DISTILLERY_WORKER_POLL_INTERVAL": "0.5", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _metric_steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


def test_worker_killed_mid_training_is_resumed_elsewhere(committed, database, database_url, jobs_settings,
                                                         tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 6)
    job_id = client.post("/v1/jobs", json=distill_spec(dataset["id"], model="slow", training=SLOW)).json()["id"]
    out_dir = jobs_settings.job_dir(job_id)
    log = tmp_path / "worker.log"
    proc = _spawn_worker(database_url, jobs_settings, log)
    try:
        def checkpointed() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            job = client.get(f"/v1/jobs/{job_id}").json()
            return job["status"] == "running" and (job["progress"] or {}).get("step", 0) >= 3

        wait_for("a checkpoint in the subprocess worker", checkpointed, timeout=90, interval=0.1)
        dead = client.get(f"/v1/jobs/{job_id}").json()
        proc.kill()  # SIGKILL: no checkpoint, no hand-back, the lease just stops being renewed
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert dead["progress"]["step"] < SLOW["max_steps"], "the run finished before it could be killed"
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # nobody knows yet
    with database.engine.connect() as conn:
        wait_for("the lease to expire", lambda: conn.execute(
            text("SELECT lease_expires_at < clock_timestamp() FROM jobs WHERE id = :id"), {"id": job_id}).scalar(),
            timeout=10)
    assert run_worker(database_url, jobs_settings, once=True, kinds=["distill"], worker_id="rescuer",
                      lease_seconds=30) == 0
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert (job["attempts"], job["lease"]["owner"]) == (2, "rescuer") and dead["lease"]["owner"] != "rescuer"
    result = job["result"]
    assert result["resumed_from_step"] >= 2 and result["resumed_from_step"] % 2 == 0
    assert result["steps"] == result["total_steps"] == SLOW["max_steps"]
    # the resumed run recomputed the steps after its checkpoint: every step logged exactly once
    assert _metric_steps(out_dir / "metrics.jsonl") == list(range(1, SLOW["max_steps"] + 1))
    assert (out_dir / "final" / "model.safetensors").is_file()
    states = [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events", params={"kind": "state", "limit": 50}
                                               ).json()["items"]]
    assert states[-2:] == ["running on rescuer (attempt 2/3)", "succeeded"]


def test_cancel_stops_a_running_distill_job_within_seconds(committed, database_url, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    import time

    client = committed
    dataset = make_dataset(client, 4)
    spec = distill_spec(dataset["id"], model="slow", training={**SLOW, "max_steps": 10_000, "checkpoint_every": 0})
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    stop = start_background_worker(database_url, jobs_settings, kinds=["distill"], poll_interval=0.5)
    try:
        wait_for("training to start", lambda: ((client.get(f"/v1/jobs/{job_id}").json()["progress"] or {})
                                               .get("step", 0) >= 2), timeout=60, interval=0.1)
        asked = time.monotonic()
        r = client.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"] and r.json()["status"] == "running"
        wait_for("the cancel", lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled",
                 timeout=15, interval=0.1)
        took = time.monotonic() - asked
    finally:
        stop()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["result"]["status"] == "stopped" and 2 <= job["result"]["steps"] < 10_000
    assert took < 15
    # it stopped cleanly: a checkpoint at the step it stopped, so a retry resumes there
    steps = [int(p.name.split("-")[1]) for p in (jobs_settings.job_dir(job_id) / "checkpoints").glob("step-*")]
    assert steps == [job["result"]["steps"]]


def test_a_distill_job_that_cannot_run_here_is_retried_then_failed(committed, database, database_url,  # type: ignore[no-untyped-def]
                                                                   jobs_settings) -> None:
    client = committed
    dataset = make_dataset(client, 3)
    # A worker advertising what it has never claims it; one advertising 64 GPUs does, finds too few, and fails
    # the attempt (retryable: another worker of the fleet might really have them).
    spec = distill_spec(dataset["id"], max_attempts=2, resources={"device": "cuda", "gpus": 64})
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    assert run_worker(database_url, jobs_settings, once=True, kinds=["distill"]) == 0
    assert client.get(f"/v1/jobs/{job_id}").json()["attempts"] == 0  # not claimed
    boastful = jobs_settings.model_copy(update={"worker_gpus": 64})
    assert run_worker(database_url, boastful, once=True, kinds=["distill"]) == 0
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"]) == ("queued", 1)  # backing off before attempt 2
    assert "Traceback" in job["error"] and "the job asks for 64 GPUs" in job["error"]
    assert run_worker(database_url, boastful, once=True, kinds=["distill"]) == 0
    assert client.get(f"/v1/jobs/{job_id}").json()["attempts"] == 1  # not due yet: nothing ran
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": uuid.UUID(job_id)})
    assert run_worker(database_url, boastful, once=True, kinds=["distill"]) == 0
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"]) == ("failed", 2) and "Traceback" in job["error"]
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": uuid.UUID(job_id)})
    assert run_worker(database_url, boastful, once=True, kinds=["distill"]) == 0
    assert client.get(f"/v1/jobs/{job_id}").json()["attempts"] == 2  # never a third run
    states = [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events", params={"kind": "state"}).json()["items"]]
    assert "attempt 1 failed; retry in 2s" in states and states[-1] == "failed"
    # an operator fixes the cause and retries: attempts start over
    assert client.post(f"/v1/jobs/{job_id}/retry").json()["attempts"] == 0


def test_a_distill_job_that_cannot_load_its_model_fails_at_once(committed, database_url, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 3)
    # "broken" holds a tokenizer but no weights: the API accepts the folder, loading the model fails.
    job_id = client.post("/v1/jobs", json=distill_spec(dataset["id"], model="broken", max_attempts=3)).json()["id"]
    assert run_worker(database_url, jobs_settings, once=True, kinds=["distill"]) == 0
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"]) == ("failed", 1), job["error"]
    assert "ModelLoadError" in job["error"] and "broken" in job["error"]
    states = [e["message"] for e in client.get(f"/v1/jobs/{job_id}/events", params={"kind": "state"}).json()["items"]]
    assert states[-1] == "failed" and not any("retry in" in s for s in states)
