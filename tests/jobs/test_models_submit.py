"""Model references at submit time (``app.jobs.models``): a finished job's model as ``job:<id>``, names under
the models root (default ``<data dir>/models``), hub ids while offline — and every refusal is a 422 that says
where models are looked up, never a queued job that fails later."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from worker.loop import start_background_worker


def _problem(r):  # type: ignore[no-untyped-def]
    assert r.status_code == 422, r.text
    return r.json()


def _run_queued(client, database_url: str, settings, job_id: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    stop = start_background_worker(database_url, settings, poll_interval=0.3)
    try:
        wait_for(f"job {job_id}", lambda: client.get(f"/v1/jobs/{job_id}").json()["status"]
                 in ("succeeded", "failed", "cancelled"), timeout=120, interval=0.2)
    finally:
        stop()
    return client.get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]


def test_a_finished_jobs_model_is_named_job_id(committed, database_url, jobs_settings) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 5)
    distill = client.post("/v1/jobs", json=distill_spec(dataset["id"], training={"max_steps": 2})).json()

    # not finished yet: refused with where models come from, never queued to fail on the worker
    early = _problem(client.post("/v1/jobs", json={"kind": "evaluate", "dataset_id": dataset["id"],
                                                   "student_model": f"job:{distill['id']}"}))
    assert early["code"] == "model_not_found" and early["errors"][0]["field"] == "student_model"
    assert "is queued" in early["detail"] and str(jobs_settings.models_root) in early["detail"]
    assert "job:<id>" in early["detail"]

    assert _run_queued(client, database_url, jobs_settings, distill["id"])["status"] == "succeeded"
    final = jobs_settings.job_dir(distill["id"]) / "final"
    r = client.post("/v1/jobs", json={"kind": "evaluate", "dataset_id": dataset["id"], "max_seq_len": 384,
                                      "student_model": f"job:{distill['id']}", "resources": {"device": "cpu"}})
    assert r.status_code == 202, r.text
    evaluate = r.json()
    assert evaluate["config"]["student_model"] == str(final.resolve())
    # the worker loads the job's model as stored: no download, no copy
    done = _run_queued(client, database_url, jobs_settings, evaluate["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["metrics"]["action"]["nll"] > 0

    # a distill job may start from it, or learn from it as its teacher (same tokenizer as "student")
    r = client.post("/v1/jobs", json=distill_spec(dataset["id"], model=f"job:{distill['id']}",
                                                  teacher_model=f"job:{distill['id']}"))
    assert r.status_code == 202, r.text
    assert r.json()["config"]["teacher_model"] == str(final.resolve())
    client.post(f"/v1/jobs/{r.json()['id']}/cancel")

    # an evaluate job produces no model
    problem = _problem(client.post("/v1/jobs", json=distill_spec(dataset["id"], model=f"job:{evaluate['id']}")))
    assert problem["code"] == "invalid_model_reference" and "only distill jobs" in problem["detail"]


@pytest.mark.parametrize(("ref", "code", "says"), [
    (f"job:{uuid.UUID(int=7)}", "model_not_found", "there is no job"),
    ("job:not-a-uuid", "invalid_model_reference", "is not 'job:<job id>'"),
    ("no-such-model", "invalid_model_reference", "neither a model under the models root"),
    ("deep/no/such", "model_not_found", "no model folder"),
])
def test_unknown_references_say_where_models_are_looked_up(client, jobs_settings, ref: str, code: str,
                                                           says: str) -> None:  # type: ignore[no-untyped-def]
    dataset = make_dataset(client, 3)
    problem = _problem(client.post("/v1/jobs", json=distill_spec(dataset["id"], model=ref)))
    assert problem["code"] == code and says in problem["errors"][0]["message"]
    assert problem["errors"][0]["field"] == "student_model" and problem["model"] == ref
    assert f"models root {jobs_settings.models_root}" in problem["detail"]
    assert client.get("/v1/jobs", params={"dataset_id": dataset["id"]}).json()["items"] == []


def test_hub_ids_offline_must_be_in_the_local_hub_cache(client, jobs_settings, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dataset = make_dataset(client, 3)
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = distill_spec(dataset["id"], model="Qwen/Qwen2.5-0.5B-Instruct")
    problem = _problem(client.post("/v1/jobs", json=spec))
    assert problem["code"] == "model_not_found" and problem["errors"][0]["field"] == "student_model"
    detail = problem["detail"]
    assert str(cache) in detail and str(jobs_settings.models_root) in detail and "HF_HUB_OFFLINE" in detail
    assert "distillery models add" in detail

    snapshot = cache / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 202, r.text
    assert r.json()["config"]["student_model"] == "Qwen/Qwen2.5-0.5B-Instruct"  # the worker loads it from the cache

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the worker downloads it
    other = distill_spec(dataset["id"], model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert client.post("/v1/jobs", json=other).status_code == 202


def test_a_folder_named_like_a_hub_id_is_used_offline(client, jobs_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``distillery models add … --name org/name`` makes jobs that name the hub id load the local copy."""
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = jobs_settings.models_root
    local = root / "SomeOrg" / "tiny-chat"
    shutil.copytree(root / "student", local, dirs_exist_ok=True)
    dataset = make_dataset(client, 3)
    r = client.post("/v1/jobs", json=distill_spec(dataset["id"], model="SomeOrg/tiny-chat"))
    assert r.status_code == 202, r.text
    assert r.json()["config"]["student_model"] == str(local.resolve())


def test_the_models_root_defaults_to_the_data_dir(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.config import Settings

    monkeypatch.delenv("DISTILLERY_MODELS_ROOT", raising=False)
    assert Settings(data_dir=tmp_path).models_root == tmp_path / "models"
    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path / "d"))
    assert Settings().models_root == tmp_path / "d" / "models"
    monkeypatch.setenv("DISTILLERY_MODELS_ROOT", str(tmp_path / "elsewhere"))
    assert Settings().models_root == tmp_path / "elsewhere"
