"""GPU-aware claims: workers advertise GPUs and launchers, the one-statement claim picks only jobs they can run,
and a job no live worker can run says why on ``GET /v1/jobs/{id}``.

The routing table is checked against the queue itself (``queue.claim`` with ``Capabilities``), then end to
end: two real workers with different advertised capabilities (``DISTILLERY_WORKER_GPUS`` /
``DISTILLERY_WORKER_LAUNCHERS`` through their settings) and jobs submitted through the queue, read through the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from app.jobs import queue
from app.jobs.placement import Capabilities
from tests.jobs.conftest import wait_for
from worker.capabilities import advertised, parse_launchers
from worker.handlers import HANDLERS
from worker.loop import run_worker, start_background_worker

CPU = Capabilities(gpus=0, launchers=("inprocess", "torchrun"))
ONE_GPU_NO_TORCHRUN = Capabilities(gpus=1, launchers=("inprocess",))
FOUR_GPUS = Capabilities(gpus=4, launchers=("inprocess", "torchrun"))
SLURM = Capabilities(gpus=0, launchers=("inprocess", "slurm"))

# resources → the workers above that may claim the job
ROUTES: list[tuple[dict[str, Any] | None, set[str]]] = [
    (None, {"CPU", "ONE_GPU_NO_TORCHRUN", "FOUR_GPUS", "SLURM"}),  # no resources: defaults, runs anywhere
    ({"device": "cpu"}, {"CPU", "ONE_GPU_NO_TORCHRUN", "FOUR_GPUS", "SLURM"}),
    ({"device": "auto"}, {"CPU", "ONE_GPU_NO_TORCHRUN", "FOUR_GPUS", "SLURM"}),  # falls back to the CPU
    ({"device": "cuda"}, {"ONE_GPU_NO_TORCHRUN", "FOUR_GPUS"}),
    ({"device": "cpu", "gpus": 3}, {"CPU", "FOUR_GPUS"}),  # 3 CPU processes: any worker with torchrun
    ({"device": "cuda", "gpus": 4}, {"FOUR_GPUS"}),
    ({"device": "auto", "gpus": 2}, {"FOUR_GPUS"}),
    ({"device": "cuda", "gpus": 8}, set()),
    ({"device": "cuda", "gpus": 8, "nodes": 2}, {"SLURM"}),  # the allocation brings the GPUs
    ({"device": "cpu", "gpus": 2, "launcher": "slurm"}, {"SLURM"}),
    ({"gpus": "many", "device": 7}, {"CPU", "ONE_GPU_NO_TORCHRUN", "FOUR_GPUS", "SLURM"}),  # odd values: defaults
]


@pytest.fixture
def engine(database) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    yield database.engine
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_events, workers CASCADE"))


@pytest.mark.parametrize(("resources", "who"), ROUTES)
def test_the_claim_routes_jobs_by_resources(engine: Engine, resources: dict[str, Any] | None, who: set[str]) -> None:
    config = {} if resources is None else {"resources": resources}
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, "distill", config)
    takers = set()
    for name, can_run in [("CPU", CPU), ("ONE_GPU_NO_TORCHRUN", ONE_GPU_NO_TORCHRUN), ("FOUR_GPUS", FOUR_GPUS),
                          ("SLURM", SLURM)]:
        with engine.connect() as conn:  # each claim rolled back: every worker gets to try
            row = queue.claim(conn, name, 60, ["distill"], can_run)
            conn.rollback()
        if row is not None:
            assert row.id == job_id
            takers.add(name)
    assert takers == who
    with engine.begin() as conn:  # without capabilities (tools, tests) nothing is filtered
        anyone = queue.claim(conn, "any", 60, ["distill"])
    assert anyone is not None and anyone.id == job_id


def test_a_job_that_does_not_fit_is_skipped_not_blocking(engine: Engine) -> None:
    with engine.begin() as conn:
        big = queue.enqueue(conn, "distill", {"resources": {"device": "cuda", "gpus": 8}}, priority=9)
        small = queue.enqueue(conn, "distill", {"resources": {"device": "cpu"}})
    with engine.begin() as conn:
        first = queue.claim(conn, "cpu", 60, ["distill"], CPU)
        assert first is not None and first.id == small
        assert queue.claim(conn, "cpu", 60, ["distill"], CPU) is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM jobs WHERE id = :id"), {"id": big}).scalar() == "queued"


def test_the_claim_is_still_one_statement_with_skip_locked(engine: Engine) -> None:
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, "distill", {"resources": {"device": "cuda", "gpus": 4}})
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.begin() as conn:
            row = queue.claim(conn, "gpu", 60, ["distill"], FOUR_GPUS)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert row is not None and row.id == job_id
    leases = [s for s in seen if "lease_owner=" in s.replace(" ", "") and s.lstrip().startswith("UPDATE jobs")]
    assert len(leases) == 1  # pick + capability filter + lease: one statement
    (claim,) = leases
    assert "FOR UPDATE SKIP LOCKED" in claim and "LIMIT" in claim
    assert "needs_gpus <=" in claim and "needs_launcher IN" in claim  # the generated columns, not the config


def test_advertised_capabilities_follow_the_settings(settings, database_url) -> None:  # type: ignore[no-untyped-def]
    fake = settings.model_copy(update={"worker_gpus": 3, "worker_launchers": "slurm, torchrun"})
    found = advertised(fake)
    assert (found.gpus, found.launchers) == (3, ("inprocess", "torchrun", "slurm"))
    assert [d["index"] for d in found.devices] == [0, 1, 2]
    none = advertised(settings.model_copy(update={"worker_gpus": 0, "worker_launchers": "inprocess"}))
    assert (none.gpus, none.launchers) == (0, ("inprocess",))
    with pytest.raises(ValueError, match="unknown launcher"):
        parse_launchers("torchrun,kubernetes")
    wrong = settings.model_copy(update={"worker_launchers": "kubernetes"})
    assert run_worker(database_url, wrong, once=True, kinds=["distill"]) == 2  # refuses to start


def _noop(ctx: Any) -> dict[str, Any]:
    return {"ok": True}


def test_two_workers_route_jobs_and_a_job_nobody_can_run_says_why(committed, jobs_settings, database_url,  # type: ignore[no-untyped-def]
                                                                  engine: Engine) -> None:
    client = committed
    HANDLERS["test_route"] = _noop
    stops = []
    try:
        def submit(resources: dict[str, Any], kind: str = "test_route") -> str:
            with engine.begin() as conn:
                return str(queue.enqueue(conn, kind, {"resources": resources}))

        def job(job_id: str) -> dict[str, Any]:
            return client.get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]

        eight = submit({"device": "cuda", "gpus": 8})
        assert job(eight)["waiting_reason"] == "no live worker"

        cpu = jobs_settings.model_copy(update={"worker_gpus": 0, "worker_launchers": "torchrun"})
        gpu = jobs_settings.model_copy(update={"worker_gpus": 2, "worker_launchers": "torchrun"})
        for name, s in (("cpu-worker", cpu), ("gpu-worker", gpu)):
            stops.append(start_background_worker(database_url, s, kinds=["test_route"], poll_interval=0.2,
                                                 worker_id=name))
        workers = wait_for("both workers", lambda: len(client.get("/v1/workers").json()["items"]) == 2 and
                           client.get("/v1/workers").json()["items"])
        assert sorted((w["id"], len(w["devices"]), w["launchers"]) for w in workers) == [
            ("cpu-worker", 0, ["inprocess", "torchrun"]), ("gpu-worker", 2, ["inprocess", "torchrun"])]

        two_gpus = [submit({"device": "cuda", "gpus": 2}) for _ in range(3)]
        one_gpu = [submit({"device": "cuda"}) for _ in range(2)]
        anywhere = [submit({"device": "cpu", "gpus": 2}) for _ in range(4)]
        slurm = submit({"device": "cpu", "gpus": 2, "launcher": "slurm"})
        other_kind = submit({"device": "cpu"}, kind="test_unclaimed")
        done = [*two_gpus, *one_gpu, *anywhere]
        wait_for("the runnable jobs", lambda: all(job(j)["status"] == "succeeded" for j in done), timeout=30)
        owners = {j: job(j)["lease"]["owner"] for j in done}
        assert {owners[j] for j in [*two_gpus, *one_gpu]} == {"gpu-worker"}
        assert {owners[j] for j in anywhere} <= {"cpu-worker", "gpu-worker"}

        for job_id, reason in [(eight, "no live worker has 8 GPUs (largest: 2)"),
                               (slurm, "no live worker has the slurm launcher"),
                               (other_kind, "no live worker takes test_unclaimed jobs")]:
            body = job(job_id)
            assert (body["status"], body["attempts"], body["waiting_reason"]) == ("queued", 0, reason)
        assert all(job(j)["waiting_reason"] is None for j in done)
        listed = client.get("/v1/jobs", params={"status": "queued"}).json()["items"]
        assert {j["id"] for j in listed} == {eight, slurm, other_kind}
    finally:
        for stop in stops:
            stop()
        HANDLERS.pop("test_route", None)
    # The workers are gone: the reason says so.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM workers"))
    assert job(eight)["waiting_reason"] == "no live worker"


def test_a_silent_worker_no_longer_counts(committed, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        job_id = queue.enqueue(conn, "distill", {"resources": {"device": "cuda"}})
        queue.register_worker(conn, "gpu:1:aa", host="gpu", pid=1, devices=[{"index": 0}], kinds=["distill"],
                              launchers=("inprocess",), lease_seconds=10)
    assert committed.get(f"/v1/jobs/{job_id}").json()["waiting_reason"] is None  # it could run it
    with engine.begin() as conn:  # three of its own leases without a heartbeat: not live
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '31 seconds'"))
    assert committed.get(f"/v1/jobs/{job_id}").json()["waiting_reason"] == "no live worker"
    with engine.begin() as conn:
        queue.register_worker(conn, "cpu:2:bb", host="cpu", pid=2, devices=[], kinds=["distill"])
    assert committed.get(f"/v1/jobs/{job_id}").json()["waiting_reason"] == "no live worker has a GPU"


def test_the_list_says_why_a_job_waits_like_the_single_read_in_one_query(committed, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        queue.register_worker(conn, "gpu:1:aa", host="gpu", pid=1, devices=[{"index": 0}], kinds=["distill"],
                              launchers=("inprocess", "torchrun"), lease_seconds=10)
        four = queue.enqueue(conn, "distill", {"resources": {"device": "cuda", "gpus": 4}})
        slurm = queue.enqueue(conn, "distill", {"resources": {"nodes": 2}})
        other_kind = queue.enqueue(conn, "capture", {})
        fits_one = queue.enqueue(conn, "distill", {"resources": {"device": "cuda"}})
        running = queue.enqueue(conn, "distill", {"resources": {"device": "cuda", "gpus": 8}})
        conn.execute(text("UPDATE jobs SET status = 'running' WHERE id = :id"), {"id": running})
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        r = committed.get("/v1/jobs")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert r.status_code == 200, r.text
    listed = {j["id"]: j["waiting_reason"] for j in r.json()["items"]}
    assert listed == {str(four): "no live worker has 4 GPUs (largest: 1)",
                      str(slurm): "no live worker has the slurm launcher",
                      str(other_kind): "no live worker takes capture jobs",
                      str(fits_one): None, str(running): None}
    assert listed == {job_id: committed.get(f"/v1/jobs/{job_id}").json()["waiting_reason"] for job_id in listed}
    assert len([s for s in seen if "FROM jobs" in s]) == 1  # the reasons come with the page, not per row
