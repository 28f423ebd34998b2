"""End to end through HTTP only: ingest synthetic teacher trajectories, approve them, freeze a dataset,
submit a distill job with a tiny student and a teacher, let a worker run it, then read its progress,
metrics, events (JSON and SSE), artifacts, lineage and the worker registry."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid

from distillery.client import _parse_sse
from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from worker.loop import start_background_worker


def _sse(client, job_id: str, **headers: str) -> list:  # type: ignore[no-untyped-def]
    with client.stream("GET", f"/v1/jobs/{job_id}/events/stream", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return list(_parse_sse(r.iter_lines()))


def test_ingest_to_trained_student_through_http(committed, database_url, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 8, eval_fraction=0.2)
    spec = distill_spec(dataset["id"], teacher_model="teacher",
                        training={"max_steps": 5, "checkpoint_every": 2, "keep_checkpoints": 5})
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    seen_workers: list = []
    stop = start_background_worker(database_url, jobs_settings, kinds=["distill", "evaluate"], poll_interval=0.5,
                                   worker_id=f"e2e-{uuid.uuid4().hex[:6]}")
    try:
        def done() -> bool:
            if not seen_workers:
                seen_workers.extend(client.get("/v1/workers").json()["items"])
            return client.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed", "cancelled")

        wait_for("the job to finish", done, timeout=120, interval=0.2)
    finally:
        stop()

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert (job["attempts"], job["result"]["steps"], job["result"]["total_steps"]) == (1, 5, 5)
    progress = job["progress"]
    assert (progress["step"], progress["total"]) == (5, 5)
    assert set(progress["losses"]) >= {"total", "reason", "action"} and set(progress["weights"]) == {"reason", "action"}
    assert progress["tokens_per_s"] > 0 and progress["eta_s"] == 0
    assert seen_workers and seen_workers[0]["alive"] and seen_workers[0]["kinds"] == ["distill", "evaluate"]
    assert client.get("/v1/workers").json()["items"] == []  # unregistered on stop

    # metrics: per step, from the run's metrics.jsonl; paging by step
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert metrics["source"] == "file" and [m["step"] for m in metrics["items"]] == [1, 2, 3, 4, 5]
    assert all(m["loss_reason"] > 0 and m["reason_tokens"] > 0 for m in metrics["items"])  # KL on reason tokens
    assert [m["step"] for m in client.get(f"/v1/jobs/{job_id}/metrics", params={"after_step": 3}).json()["items"]
            ] == [4, 5]
    page = client.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 2}).json()
    assert [m["step"] for m in page["items"]] == [1, 2] and page["next_after_step"] == 2

    # events: JSON pages and the SSE stream, which ends with the final status
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]
    states = [e["message"] for e in events if e["kind"] == "state"]
    assert states[0] == "queued" and states[1].startswith("running on e2e-") and states[-1] == "succeeded"
    assert [e["data"]["step"] for e in events if e["kind"] == "progress"] == [1, 2, 3, 4, 5]
    stream = _sse(client, job_id)
    assert [e.id for e in stream[:-1]] == [e["id"] for e in events]
    assert stream[-1].event == "end" and stream[-1].data["status"] == "succeeded"
    assert [e.event for e in stream[:-1]] == [e["kind"] for e in events]
    resumed = _sse(client, job_id, **{"Last-Event-ID": str(events[-3]["id"])})
    assert [e.id for e in resumed] == [events[-2]["id"], events[-1]["id"], None]
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream") and "event: end" in r.read().decode()

    # artifacts: the final model, reports, plot, metrics, checkpoints; downloads match the listing
    listing = client.get(f"/v1/jobs/{job_id}/artifacts", params={"sha256": "true"}).json()
    by_path = {a["path"]: a for a in listing["items"]}
    assert {"final/model.safetensors", "final/config.json", "final/tokenizer.json", "eval_report.json",
            "loss_curves.png", "metrics.jsonl"} <= set(by_path)
    assert by_path["final/model.safetensors"]["kind"] == "model" and by_path["eval_report.json"]["kind"] == "report"
    assert by_path["loss_curves.png"]["kind"] == "plot" and by_path["metrics.jsonl"]["kind"] == "metrics"
    assert {a["path"].split("/")[1] for a in listing["items"] if a["kind"] == "checkpoint"} == {
        "step-00000002", "step-00000004", "step-00000005"}
    png = client.get(f"/v1/jobs/{job_id}/artifacts/loss_curves.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert hashlib.sha256(png.content).hexdigest() == by_path["loss_curves.png"]["sha256"]
    report = client.get(f"/v1/jobs/{job_id}/artifacts/eval_report.json").json()
    assert set(report) == {"before", "after", "delta"} and report["after"]["action"]["nll"] > 0
    config = json.loads(client.get(f"/v1/jobs/{job_id}/artifacts/final/config.json").content)
    assert config["model_type"] == "llama"
    final = client.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "final"}).json()["items"]
    assert final and all(a["path"].startswith("final/") for a in final)

    # lineage: the dataset snapshot, its pinned items, and what the trainer recorded
    lineage = client.get(f"/v1/jobs/{job_id}/lineage").json()
    assert lineage["dataset"]["id"] == dataset["id"] and lineage["dataset"]["name"] == dataset["name"]
    assert lineage["dataset"]["content_sha256"] == dataset["content_sha256"]
    assert len(lineage["items"]) == dataset["counts"]["items"] == 8 and not lineage["items_truncated"]
    assert all(set(i) >= {"trajectory_id", "span_revision", "split"} and i["span_revision"] == 1
               for i in lineage["items"])
    assert lineage["items_url"] == f"/v1/datasets/{dataset['id']}/items"
    assert "final/model.safetensors" in lineage["models"]["final"]
    assert [c["step"] for c in lineage["models"]["checkpoints"]] == [2, 4, 5]
    assert lineage["models"]["checkpoints"][-1]["job_id"] == job_id
    assert len(lineage["trained_on"]["records_sha256"]) == 64
    assert lineage["models"]["teacher_model"].endswith("/teacher")


def test_evaluate_job_scores_a_model(committed, database_url, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 5)
    r = client.post("/v1/jobs", json={"kind": "evaluate", "dataset_id": dataset["id"], "student_model": "student",
                                      "teacher_model": "teacher", "max_seq_len": 384, "resources": {"device": "cpu"}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    stop = start_background_worker(database_url, jobs_settings, kinds=["evaluate"], poll_interval=0.5)
    try:
        wait_for("the evaluation", lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] != "queued"
                 and client.get(f"/v1/jobs/{job_id}").json()["status"] != "running", timeout=60, interval=0.2)
    finally:
        stop()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["metrics"]["reason"]["kl_teacher"] >= 0 and job["progress"]["step"] == 1
    report = client.get(f"/v1/jobs/{job_id}/artifacts/eval_report.json").json()
    assert report["split"] == "eval" and report["metrics"] == job["result"]["metrics"]
    assert client.get(f"/v1/jobs/{job_id}/metrics").json()["source"] == "events"


def test_sse_streams_live_and_ends_on_terminal_state(committed, database) -> None:  # type: ignore[no-untyped-def]
    """A stream opened on a running job gets events as they are written, keep-alives while idle, and
    ends once the job is settled."""
    from app.jobs import queue

    client = committed
    dataset = make_dataset(client, 3)
    job_id = client.post("/v1/jobs", json=distill_spec(dataset["id"])).json()["id"]
    with database.engine.begin() as conn:
        queue.claim(conn, "w-sse", 60, ["distill"])
    frames: list[str] = []

    def read() -> None:
        with client.stream("GET", f"/v1/jobs/{job_id}/events/stream", params={"heartbeat": 0.5}) as r:
            for line in r.iter_lines():
                frames.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with database.engine.begin() as conn:
        queue.set_progress(conn, uuid.UUID(job_id), "w-sse", [{"step": 1, "total": 2}])
    # Idle after the progress event: a keep-alive comment must come (within the heartbeat; the bound is generous).
    def idle_keep_alive() -> bool:
        seen = list(frames)
        progress = [i for i, f in enumerate(seen) if f == "event: progress"]
        return bool(progress) and ": keep-alive" in seen[progress[-1]:]

    wait_for("a keep-alive while idle", idle_keep_alive, timeout=15)
    with database.engine.begin() as conn:
        queue.finish(conn, uuid.UUID(job_id), "w-sse", "succeeded", result={"ok": True})
    reader.join(timeout=15)
    assert not reader.is_alive(), "the stream did not end on the final state"
    events = list(_parse_sse(iter(frames)))
    assert [e.event for e in events] == ["state", "log", "state", "progress", "state", "end"]
    assert events[-1].data == {"status": "succeeded", "last_event_id": events[-2].id}
    assert ": keep-alive" in frames
