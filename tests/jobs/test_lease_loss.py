"""A worker that loses its job's lease stops training that job by itself: two workers never train one job.

A real worker (``run_worker(once=True)`` in a thread, so the thread ends when its one job ends) trains a long
job under a long lease; another worker then takes the job over (the lease is expired in the database and the
job claimed again, as a successor would after a pause). The first worker must notice from its own refused
writes and stop, long before the job or its lease would have ended, and leave the job to its successor.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from sqlalchemy import text

from app.jobs import queue
from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from worker.loop import run_worker

LONG_LEASE = 300.0  # neither the lease nor its renew deadline can end the first attempt during the test
SLOW = {"max_steps": 10_000, "checkpoint_every": 0, "micro_batch_size": 4, "eval_max_examples": 0}


def test_a_worker_whose_lease_was_taken_over_stops_the_job(committed: Any, database: Any, database_url: str,
                                                           jobs_settings: Any) -> None:
    client = committed
    dataset = make_dataset(client, 4)
    job_id = client.post("/v1/jobs", json=distill_spec(dataset["id"], model="slow", training=SLOW)).json()["id"]
    stop = threading.Event()
    codes: list[int] = []
    first = threading.Thread(target=lambda: codes.append(run_worker(
        database_url, jobs_settings, once=True, worker_id="w-first", kinds=["distill"], poll_interval=0.2,
        lease_seconds=LONG_LEASE, stop_event=stop)), daemon=True)
    first.start()
    try:
        wait_for("training to start", lambda: ((client.get(f"/v1/jobs/{job_id}").json()["progress"] or {})
                                               .get("step", 0) >= 2), timeout=120, interval=0.1)
        with database.engine.begin() as conn:  # a successor takes the job over
            conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
                         {"id": job_id})
            successor = queue.claim(conn, "w-successor", 600, ["distill"])
        assert successor is not None and str(successor.id) == job_id and successor.attempts == 2
        first.join(timeout=90)  # only bounds a broken run: 10,000 slow steps take far longer
        assert not first.is_alive(), "the first worker kept training a job whose lease it had lost"
        assert codes == [0]
        job = client.get(f"/v1/jobs/{job_id}").json()
        # the first attempt settled nothing: the job is still its successor's
        assert (job["status"], job["attempts"]) == ("running", 2)
        with database.engine.connect() as conn:
            owner, token = conn.execute(text("SELECT lease_owner, lease_token FROM jobs WHERE id = :id"),
                                        {"id": job_id}).one()
        assert owner == "w-successor" and token == successor.lease_token
        assert isinstance(token, uuid.UUID)
    finally:
        stop.set()
        first.join(timeout=60)
