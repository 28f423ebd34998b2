"""POST /v1/jobs validation (shape, ranges, datasets, model references, tokenizers), idempotency, and
list / get / cancel / retry transitions, through HTTP against a real database."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.jobs import queue
from tests.jobs.conftest import distill_spec, make_dataset


@pytest.fixture
def dataset(client, jobs_settings):  # type: ignore[no-untyped-def]
    return make_dataset(client, 4)


def _problem(r):  # type: ignore[no-untyped-def]
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def test_submit_queues_a_validated_job(client, dataset, models_root: Path) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/jobs", json=distill_spec(dataset["id"], teacher_model="teacher", priority=5,
                                                  loss={"alpha": 0.5}))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["kind"], job["priority"], job["attempts"], job["max_attempts"]) == (
        "queued", "distill", 5, 0, 3)
    # local references are stored resolved; defaults are filled in; KL follows the teacher
    assert job["config"]["student_model"] == str((models_root / "student").resolve())
    assert job["config"]["teacher_model"] == str((models_root / "teacher").resolve())
    assert job["config"]["loss"]["teacher_signal"] == "online" and job["config"]["loss"]["alpha"] == 0.5
    assert job["config"]["training"]["max_steps"] == 3 and "dataset_id" not in job["config"]
    assert job["dataset_id"] == dataset["id"] and job["links"]["events"] == f"/v1/jobs/{job['id']}/events"
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["status"] == "queued" and got["config"] == job["config"] and got["lease"]["owner"] is None
    # the nested form is accepted too
    nested = {"kind": "distill", "dataset_id": dataset["id"],
              "config": {k: v for k, v in distill_spec(dataset["id"]).items() if k not in ("kind", "dataset_id")}}
    assert client.post("/v1/jobs", json=nested).status_code == 202


def test_hub_ids_are_accepted_as_given(client, dataset, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the worker downloads them (offline: test_models_submit.py)
    spec = distill_spec(dataset["id"], model="Qwen/Qwen2.5-0.5B-Instruct", teacher_model="Qwen/Qwen2.5-7B-Instruct")
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    assert r.json()["config"]["student_model"] == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.parametrize(("patch", "field", "code"), [
    ({"training": {"max_stepz": 3}}, "training.max_stepz", "extra_forbidden"),
    ({"surprise": 1}, "surprise", "extra_forbidden"),
    ({"training": {"max_steps": 0}}, "training.max_steps", "greater_than_equal"),
    ({"loss": {"temperature": 100}}, "loss.temperature", "less_than_equal"),
    ({"priority": 10_000}, "priority", "less_than_equal"),
    ({"max_attempts": 0}, "max_attempts", "greater_than_equal"),
    ({"kind": "export"}, "kind", "literal_error"),
    ({"dataset_id": "nope"}, "dataset_id", "uuid_parsing"),
    ({"resources": {"gpus": 0}}, "resources.gpus", "greater_than_equal"),
])
def test_shape_and_range_errors_name_the_field(client, dataset, patch, field, code) -> None:  # type: ignore[no-untyped-def]
    spec = distill_spec(dataset["id"])
    for key, value in patch.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    problem = _problem(client.post("/v1/jobs", json=spec))
    assert problem["code"] == "validation_error"
    assert {"field": field, "code": code} in [{"field": e["field"], "code": e["code"]} for e in problem["errors"]]


def test_errors_inside_a_nested_config_are_named_under_config(client, dataset) -> None:  # type: ignore[no-untyped-def]
    config = {k: v for k, v in distill_spec(dataset["id"]).items() if k not in ("kind", "dataset_id")}

    def submit(priority: int = 0, **changes: object) -> dict:  # type: ignore[type-arg]
        body = {"kind": "distill", "dataset_id": dataset["id"], "priority": priority, "config": {**config, **changes}}
        return _problem(client.post("/v1/jobs", json=body))  # type: ignore[no-any-return]

    fields = {(e["field"], e["code"]) for e in submit(10_000, training={"max_steps": 0})["errors"]}
    assert {("priority", "less_than_equal"), ("config.training.max_steps", "greater_than_equal")} <= fields
    problem = submit(student_model="deep/no/such")
    assert problem["code"] == "model_not_found" and problem["errors"][0]["field"] == "config.student_model"
    problem = submit(teacher_model="stranger")
    assert problem["code"] == "tokenizer_mismatch" and problem["errors"][0]["field"] == "config.teacher_model"


def test_combination_errors_and_evaluate_rules(client, dataset) -> None:  # type: ignore[no-untyped-def]
    spec = distill_spec(dataset["id"], loss={"teacher_signal": "online"})
    problem = _problem(client.post("/v1/jobs", json=spec))
    assert "teacher_model" in problem["errors"][0]["message"]
    ev = {"kind": "evaluate", "dataset_id": dataset["id"], "student_model": "student", "training": {}}
    assert _problem(client.post("/v1/jobs", json=ev))["errors"][0]["field"] == "training"
    ev = {"kind": "evaluate", "dataset_id": dataset["id"], "student_model": "student", "split": "all"}
    assert client.post("/v1/jobs", json=ev).status_code == 202


def test_dataset_must_exist_and_have_a_train_split(client, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    missing = str(uuid.uuid4())
    problem = _problem(client.post("/v1/jobs", json=distill_spec(missing)))
    assert problem["code"] == "dataset_not_found" and problem["errors"][0]["field"] == "dataset_id"
    only_eval = make_dataset(client, 2, eval_fraction=0.5, want=lambda s: s == ["eval", "eval"])
    problem = _problem(client.post("/v1/jobs", json=distill_spec(only_eval["id"])))
    assert problem["code"] == "empty_train_split" and problem["counts"] == {"train": 0, "eval": 2}
    ev = {"kind": "evaluate", "dataset_id": only_eval["id"], "student_model": "student", "split": "train"}
    assert _problem(client.post("/v1/jobs", json=ev))["code"] == "empty_train_split"
    ev["split"] = "eval"
    assert client.post("/v1/jobs", json=ev).status_code == 202


@pytest.mark.parametrize(("ref", "code"), [
    ("../../etc", "model_path_not_allowed"),
    ("student/../../..", "model_path_not_allowed"),
    ("/etc", "model_path_not_allowed"),
    ("~/models/x", "model_path_not_allowed"),
    ("escape", "model_path_not_allowed"),  # a symlink inside the root pointing out of it
    ("no-such-model", "invalid_model_reference"),
    ("deep/no/such", "model_not_found"),
])
def test_model_references_outside_the_root_are_refused(client, dataset, models_root: Path, tmp_path: Path,
                                                        ref: str, code: str) -> None:
    outside = tmp_path / "outside-model"
    outside.mkdir()
    link = models_root / "escape"
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    problem = _problem(client.post("/v1/jobs", json=distill_spec(dataset["id"], model=ref)))
    assert problem["code"] == code, problem
    assert problem["errors"][0]["field"] == "student_model"
    # an absolute path inside the root is fine
    inside = client.post("/v1/jobs", json=distill_spec(dataset["id"], model=str(models_root / "student")))
    assert inside.status_code == 202, inside.text


def test_local_paths_need_a_models_root(client, dataset, monkeypatch, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(jobs_settings, "models_root", None)
    problem = _problem(client.post("/v1/jobs", json=distill_spec(dataset["id"], model="/models/student")))
    assert problem["code"] == "model_path_not_allowed"


def test_tokenizer_mismatch_is_refused_when_kl_needs_a_teacher(client, dataset) -> None:  # type: ignore[no-untyped-def]
    problem = _problem(client.post("/v1/jobs", json=distill_spec(dataset["id"], teacher_model="stranger")))
    assert problem["code"] == "tokenizer_mismatch"
    assert problem["differences"] and any("vocabulary" in d or "token ids" in d for d in problem["differences"])
    assert problem["errors"][0]["field"] == "teacher_model"
    # no KL (cross-entropy only): the teacher's vocabulary does not matter
    ok = distill_spec(dataset["id"], teacher_model="stranger", loss={"teacher_signal": "none"})
    assert client.post("/v1/jobs", json=ok).status_code == 202
    ev = {"kind": "evaluate", "dataset_id": dataset["id"], "student_model": "student", "teacher_model": "stranger"}
    assert _problem(client.post("/v1/jobs", json=ev))["code"] == "tokenizer_mismatch"


def test_idempotency_key_replays_the_job(client, dataset) -> None:  # type: ignore[no-untyped-def]
    spec = distill_spec(dataset["id"])
    first = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "job-1"})
    again = client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "job-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert len(client.get("/v1/jobs", params={"dataset_id": dataset["id"]}).json()["items"]) == 1
    other = client.post("/v1/jobs", json={**spec, "priority": 1}, headers={"Idempotency-Key": "job-1"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


def test_list_filters_and_pages(client, dataset) -> None:  # type: ignore[no-untyped-def]
    ids = [client.post("/v1/jobs", json=distill_spec(dataset["id"])).json()["id"] for _ in range(3)]
    ev = client.post("/v1/jobs", json={"kind": "evaluate", "dataset_id": dataset["id"], "student_model": "student"})
    ids.append(ev.json()["id"])
    page = client.get("/v1/jobs", params={"limit": 3}).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:3] and page["next_cursor"]
    rest = client.get("/v1/jobs", params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [j["id"] for j in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    assert [j["id"] for j in client.get("/v1/jobs", params={"kind": "evaluate"}).json()["items"]] == [ids[3]]
    assert len(client.get("/v1/jobs", params={"status": "queued", "dataset_id": dataset["id"]}).json()["items"]) == 4
    assert client.get("/v1/jobs", params={"status": "running"}).json()["items"] == []
    assert client.get("/v1/jobs", params={"cursor": "garbage"}).json()["code"] == "invalid_cursor"
    assert client.get("/v1/jobs", params={"limit": 1001}).status_code == 422
    assert client.get(f"/v1/jobs/{uuid.uuid4()}").json()["code"] == "job_not_found"


def test_cancel_and_retry_transitions(committed, database) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 4)
    engine: Engine = database.engine
    queued = client.post("/v1/jobs", json=distill_spec(dataset["id"])).json()
    r = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert client.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 202  # already cancelled: no-op

    running = client.post("/v1/jobs", json=distill_spec(dataset["id"], max_attempts=1)).json()
    with engine.begin() as conn:
        assert queue.claim(conn, "w-test", 60, ["distill"]).id == uuid.UUID(running["id"])
    r = client.post(f"/v1/jobs/{running['id']}/retry")
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    assert r.json()["status"] == 409 and r.json()["current_status"] == "running"
    r = client.post(f"/v1/jobs/{running['id']}/cancel")
    assert r.status_code == 202 and (r.json()["status"], r.json()["cancel_requested"]) == ("running", True)
    assert r.json()["lease"]["owner"] == "w-test"
    with engine.begin() as conn:  # the worker's handler raised: no attempt left → failed
        assert queue.fail_or_retry(conn, uuid.UUID(running["id"]), "w-test", "Traceback: boom") == "cancelled"

    failing = client.post("/v1/jobs", json=distill_spec(dataset["id"], max_attempts=1)).json()
    with engine.begin() as conn:
        queue.claim(conn, "w-test", 60, ["distill"])
        assert queue.fail_or_retry(conn, uuid.UUID(failing["id"]), "w-test", "Traceback: boom") == "failed"
    job = client.get(f"/v1/jobs/{failing['id']}").json()
    assert (job["status"], job["attempts"], job["error"]) == ("failed", 1, "Traceback: boom")
    assert client.post(f"/v1/jobs/{failing['id']}/cancel").json()["code"] == "invalid_transition"
    for job_id in (failing["id"], queued["id"], running["id"]):
        r = client.post(f"/v1/jobs/{job_id}/retry")
        assert r.status_code == 202, r.text
        again = r.json()
        assert (again["status"], again["attempts"], again["cancel_requested"], again["finished_at"]) == (
            "queued", 0, False, None)
    assert client.post(f"/v1/jobs/{failing['id']}/retry").json()["code"] == "invalid_transition"
    with engine.begin() as conn:  # claimable again, attempts counted from 1
        claimed = queue.claim(conn, "w-2", 60, ["distill"])
    assert claimed is not None and claimed.attempts == 1
    states = [e["message"] for e in client.get(f"/v1/jobs/{claimed.id}/events",
                                               params={"kind": "state"}).json()["items"]]
    assert states[-2] == "queued again (retry)" and states[-1].startswith("running on w-2 (attempt 1/")
