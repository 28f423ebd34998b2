"""Artifacts: listing and downloading a job's files, and every way out of its folder refused; the worker
registry; scopes of the jobs routes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.annotations.helpers import keyed_client, sql
from tests.jobs.conftest import distill_spec, make_dataset


@pytest.fixture
def job(client, jobs_settings):  # type: ignore[no-untyped-def]
    dataset = make_dataset(client, 3)
    job = client.post("/v1/jobs", json=distill_spec(dataset["id"])).json()
    root = jobs_settings.job_dir(job["id"])
    yield job, root
    shutil.rmtree(root, ignore_errors=True)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def test_artifacts_are_listed_by_kind_and_downloadable(client, job, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job_, root = job
    _write(root / "final" / "model.safetensors", b"\x00" * 1000)
    _write(root / "final" / "config.json", '{"model_type": "llama"}')
    _write(root / "checkpoints" / "step-00000002" / "meta.json", json.dumps({"step": 2, "complete": True}))
    _write(root / "checkpoints" / ".step-00000004.tmp" / "meta.json", "{}")  # being assembled: hidden
    _write(root / "eval_report.json", "{}")
    _write(root / "loss_curves.png", b"\x89PNG fake")
    _write(root / "metrics.jsonl", '{"step": 1, "loss": 2.0}\n')
    _write(root / "train.log", "rank 0 ready\n")
    _write(tmp_path / "secret.txt", "top secret")
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    listing = client.get(f"/v1/jobs/{job_['id']}/artifacts").json()
    kinds = {a["path"]: a["kind"] for a in listing["items"]}
    assert kinds == {
        "checkpoints/step-00000002/meta.json": "checkpoint", "eval_report.json": "report",
        "final/config.json": "model", "final/model.safetensors": "model", "loss_curves.png": "plot",
        "metrics.jsonl": "metrics", "train.log": "log",
    }
    assert listing["total_bytes"] == sum(a["size"] for a in listing["items"]) and listing["items"][0]["sha256"] is None
    r = client.get(f"/v1/jobs/{job_['id']}/artifacts/final/model.safetensors")
    assert r.status_code == 200 and r.content == b"\x00" * 1000
    assert client.get(f"/v1/jobs/{job_['id']}/artifacts/final/config.json").json() == {"model_type": "llama"}
    metrics = client.get(f"/v1/jobs/{job_['id']}/metrics").json()
    assert metrics["source"] == "file" and metrics["items"] == [{"step": 1, "loss": 2.0}]


def test_lineage_lists_complete_checkpoints_and_the_final_model(client, job) -> None:  # type: ignore[no-untyped-def]
    job_, root = job
    _write(root / "final" / "config.json", "{}")
    for step, complete in ((4, True), (2, True), (6, False)):  # step 6 was cut short
        meta = {"step": step, "complete": complete, "config": {"big": "repeated"}, "dataset_hash": f"h{step}",
                "code_version": "v1"}
        _write(root / "checkpoints" / f"step-{step:08d}" / "meta.json", json.dumps(meta))
    models = client.get(f"/v1/jobs/{job_['id']}/lineage").json()["models"]
    assert [c["path"] for c in models["checkpoints"]] == ["checkpoints/step-00000002", "checkpoints/step-00000004"]
    assert all("config" not in c for c in models["checkpoints"])
    assert models["final"] == ["final/config.json"] and models["final_dir"] == "final"
    trained_on = client.get(f"/v1/jobs/{job_['id']}/lineage").json()["trained_on"]
    assert trained_on == {"records_sha256": "h4", "code_version": "v1"}


@pytest.mark.parametrize("path", [
    "..%2Fsecret.txt",
    "..%2F..%2Fsecret.txt",
    "%2E%2E/%2E%2E/secret.txt",
    "final/%2E%2E/%2E%2E/%2E%2E/secret.txt",
    "%2Fetc%2Fpasswd",
    "leak.txt",  # a symlink out of the folder
    "final",  # a directory
    ".hidden",
    "final/..%5C..%5Csecret.txt",
    "nope.bin",
])
def test_nothing_outside_the_job_folder_is_served(client, job, tmp_path: Path, path: str) -> None:  # type: ignore[no-untyped-def]
    job_, root = job
    _write(root / "final" / "config.json", "{}")
    _write(root / ".hidden", "x")
    _write(root.parent / "secret.txt", "top secret")  # data_dir/jobs/secret.txt, right next door
    _write(root.parent.parent / "secret.txt", "top secret")  # data_dir/secret.txt
    _write(tmp_path / "secret.txt", "top secret")
    (root / "leak.txt").symlink_to(tmp_path / "secret.txt")
    r = client.get(f"/v1/jobs/{job_['id']}/artifacts/{path}")
    assert r.status_code == 404, (path, r.status_code, r.text)
    assert r.json()["code"] == "artifact_not_found"  # the request reached the route: the check refused it
    assert "secret" not in r.text or "top secret" not in r.text


def test_artifacts_of_a_job_without_files(client, job) -> None:  # type: ignore[no-untyped-def]
    job_, _ = job
    assert client.get(f"/v1/jobs/{job_['id']}/artifacts").json() == {"job_id": job_["id"], "items": [],
                                                                      "total_bytes": 0}
    assert client.get(f"/v1/jobs/{job_['id']}/metrics").json()["source"] == "none"
    lineage = client.get(f"/v1/jobs/{job_['id']}/lineage").json()
    assert lineage["models"]["final"] == [] and lineage["dataset"]["id"] == job_["dataset_id"]


def test_workers_list_with_liveness(app, client, jobs_settings, job) -> None:  # type: ignore[no-untyped-def]
    job_, _ = job
    devices = '[{"index": 0, "name": "NVIDIA H200", "memory_gb": 139.8}]'
    sql(app, "INSERT INTO workers (id, host, pid, devices, kinds, current_job_id) VALUES "
             "('gpu-1:10:aa', 'gpu-1', 10, CAST(:d AS jsonb), '[\"distill\"]', :job)", d=devices, job=job_["id"])
    sql(app, "INSERT INTO workers (id, host, pid, kinds, last_heartbeat_at, started_at) VALUES "
             "('gpu-2:11:bb', 'gpu-2', 11, '[\"distill\", \"evaluate\"]', now() - interval '1 hour', "
             "now() - interval '2 hours')")
    items = client.get("/v1/workers").json()["items"]
    assert [(w["id"], w["alive"]) for w in items] == [("gpu-2:11:bb", False), ("gpu-1:10:aa", True)]
    live = items[1]
    assert live["devices"][0]["name"] == "NVIDIA H200" and live["current_job_id"] == job_["id"]
    assert live["current_job_status"] == "queued" and live["host"] == "gpu-1" and live["kinds"] == ["distill"]
    assert [w["id"] for w in client.get("/v1/workers", params={"alive": "true"}).json()["items"]] == ["gpu-1:10:aa"]
    assert [w["id"] for w in client.get("/v1/workers", params={"alive": "false"}).json()["items"]] == ["gpu-2:11:bb"]


def test_jobs_routes_need_the_operate_scope(app, client, job) -> None:  # type: ignore[no-untyped-def]
    job_, _ = job
    curator = keyed_client(app, client, ["curate", "ingest", "annotate"], name="curator")
    assert curator.get(f"/v1/jobs/{job_['id']}").json()["code"] == "missing_scope"
    assert curator.post("/v1/jobs", json={}).status_code == 403
    operator = keyed_client(app, client, ["operate"], name="operator")
    assert operator.get(f"/v1/jobs/{job_['id']}").status_code == 200
    assert operator.get("/v1/workers").status_code == 200
