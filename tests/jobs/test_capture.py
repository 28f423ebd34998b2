"""Capture → offline distill end to end, through the API and a real worker on tiny models: an offline distill
job is refused until a matching capture has succeeded (the capture runs in two CPU ranks under torchrun), then
finds it (or is given it), and trains from it without loading the teacher."""

from __future__ import annotations

import uuid
from typing import Any

from tests.jobs.conftest import CPU_TRAINING, distill_spec, make_dataset, wait_for
from worker.loop import start_background_worker


def _run_until_done(client: Any, database_url: str, settings: Any, job_ids: list[str]) -> list[dict[str, Any]]:
    stop = start_background_worker(database_url, settings, kinds=["capture", "distill"], poll_interval=0.3,
                                   worker_id=f"capture-{uuid.uuid4().hex[:6]}")
    try:
        def done() -> bool:
            return all(client.get(f"/v1/jobs/{j}").json()["status"] in ("succeeded", "failed", "cancelled")
                       for j in job_ids)

        wait_for("the jobs to finish", done, timeout=180, interval=0.3)
    finally:
        stop()
    return [client.get(f"/v1/jobs/{j}").json() for j in job_ids]


def _offline(dataset_id: str, **loss: Any) -> dict[str, Any]:
    return distill_spec(dataset_id, teacher_model="teacher", loss={"teacher_signal": "offline", **loss},
                        training={"max_steps": 3, "eval_max_examples": 0})


def test_capture_then_offline_distill_through_the_api(committed, database_url, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    client = committed
    # Three train items at least: shard_size 2 then gives two shards, one per rank (two train items, which the
    # default split allows, made one shard and failed the shard check below about once in fifty runs).
    dataset = make_dataset(client, 6, eval_fraction=0.2, want=lambda s: s.count("eval") >= 1 and s.count("train") >= 3)

    r = client.post("/v1/jobs", json=_offline(dataset["id"]))
    assert r.status_code == 422 and r.json()["code"] == "capture_not_found", r.text
    assert r.json()["wanted"]["max_seq_len"] == CPU_TRAINING["max_seq_len"]
    assert r.json()["errors"][0]["field"] == "loss.capture"

    capture = {"kind": "capture", "dataset_id": dataset["id"], "teacher_model": "teacher", "student_model": "student",
               "max_seq_len": CPU_TRAINING["max_seq_len"], "top_k": 8, "shard_size": 2,
               "resources": {"device": "cpu", "gpus": 2}}  # two ranks under torchrun, each taking every other shard
    r = client.post("/v1/jobs", json=capture)
    assert r.status_code == 202, r.text
    capture_id = r.json()["id"]
    r = client.post("/v1/jobs", json=_offline(dataset["id"]))
    assert r.status_code == 422 and r.json()["code"] == "capture_not_found"  # queued is not enough

    (job,) = _run_until_done(client, database_url, jobs_settings, [capture_id])
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    manifest = result["manifest"]
    assert result["status"] == "completed" and manifest["complete"] and manifest["top_k"] == 8
    assert result["shards_done"] == list(range(0, manifest["shards"], 2)) and manifest["positions"] > 0  # rank 0's
    assert manifest["shards"] >= 2 and job["progress"]["step"] == manifest["shards"]
    listed = {a["path"] for a in client.get(f"/v1/jobs/{capture_id}/artifacts").json()["items"]}
    assert {"capture/manifest.json", "capture/shard-00000.npz"} <= listed

    # Found by key, or named; a capture made for another setting is refused with what differs.
    r = client.post("/v1/jobs", json=_offline(dataset["id"]))
    assert r.status_code == 202, r.text
    found = r.json()
    assert found["config"]["loss"]["capture"].endswith(f"{capture_id}/capture")
    r = client.post("/v1/jobs", json=_offline(dataset["id"], capture=f"job:{capture_id}"))
    assert r.status_code == 202, r.text
    r = client.post("/v1/jobs", json=_offline(dataset["id"], capture=f"job:{capture_id}", temperature=2.0))
    assert r.status_code == 422 and r.json()["code"] == "capture_mismatch"
    assert any("temperature" in d for d in r.json()["differences"])
    r = client.post("/v1/jobs", json=_offline(dataset["id"], capture=f"job:{uuid.uuid4()}"))
    assert r.status_code == 422 and r.json()["code"] == "capture_mismatch"
    r = client.post("/v1/jobs", json=_offline(dataset["id"], capture="/etc"))
    assert r.status_code == 422 and r.json()["code"] == "invalid_capture_reference"
    r = client.post("/v1/jobs", json={**_offline(dataset["id"]), "student_model": "stranger"})
    assert r.status_code == 422  # another tokenizer: no capture can serve it (and no KL with that teacher)

    (trained,) = _run_until_done(client, database_url, jobs_settings, [found["id"]])
    assert trained["status"] == "succeeded", trained["error"]
    rows = client.get(f"/v1/jobs/{found['id']}/metrics").json()["items"]
    assert [m["step"] for m in rows] == [1, 2, 3]
    assert all(m["reason_tokens"] > 0 and m["loss_reason"] > 0 for m in rows)  # KL to the captured signal


def test_capture_config_is_checked_at_submit(committed) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 4, eval_fraction=0.2)
    base = {"kind": "capture", "dataset_id": dataset["id"], "teacher_model": "teacher", "student_model": "student"}
    for bad, field in (({"top_k": 0}, "top_k"), ({"resources": {"nodes": 2}}, "resources"),
                       ({"teacher_model": "stranger"}, "teacher_model"), ({"bogus": 1}, "bogus")):
        r = client.post("/v1/jobs", json={**base, **bad})
        assert r.status_code == 422, r.text
        assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()["errors"]
    r = client.post("/v1/jobs", json={k: v for k, v in base.items() if k != "teacher_model"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "teacher_model"


def test_a_capture_serves_only_the_tool_call_syntax_it_was_rendered_with() -> None:
    """The signal sits at the positions of one rendering: a hermes distill job never reuses a native capture."""
    from types import SimpleNamespace

    from app.jobs.captures import differences, wanted_key
    from contract.job_config import DistillConfig

    cfg = {"teacher_model": "t", "student_model": "/nowhere/s", "max_seq_len": 512, "temperature": 1.0}
    native = SimpleNamespace(config={**cfg, "tool_call_syntax": "native"}, result={"key": {}})
    older = SimpleNamespace(config=dict(cfg), result={"key": {}})  # stored before the field existed: native
    for syntax, served in (("native", True), ("hermes", False)):
        job = DistillConfig.model_validate({
            "student_model": "/nowhere/s", "teacher_model": "t",
            "loss": {"teacher_signal": "offline", "temperature": 1.0},
            "training": {"max_seq_len": 512, "tool_call_syntax": syntax}})
        want = wanted_key(job, "/nowhere/s", "t")
        for row in (native, older):
            problems = differences(row, want)
            assert (problems == []) is served, problems
            assert served or any("tool_call_syntax" in p for p in problems)
