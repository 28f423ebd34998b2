"""POST /v1/jobs refuses a local student or teacher whose architecture has no known post-head logit transform
(``contract.architectures``): 422 ``unsupported_architecture`` naming the field, before anything is queued."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.jobs.conftest import distill_spec, make_dataset


@pytest.fixture
def dataset(client, jobs_settings):  # type: ignore[no-untyped-def]
    return make_dataset(client, 4)


@pytest.fixture
def unsupported(models_root: Path) -> str:
    """A model folder with the student's tokenizer and a config.json naming model_type gpt2 (not supported)."""
    name = f"gpt2-{uuid.uuid4().hex[:6]}"
    folder = models_root / name
    folder.mkdir()
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(models_root / "student" / file, folder / file)
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    return name


def _problem(r):  # type: ignore[no-untyped-def]
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def test_an_unsupported_student_is_refused(client, dataset, unsupported) -> None:  # type: ignore[no-untyped-def]
    problem = _problem(client.post("/v1/jobs", json=distill_spec(dataset["id"], model=unsupported)))
    assert problem["code"] == "unsupported_architecture"
    assert problem["errors"] == [{"field": "student_model", "code": "unsupported_architecture",
                                  "message": problem["errors"][0]["message"]}]
    assert "model_type 'gpt2' is not supported" in problem["errors"][0]["message"]
    assert client.get("/v1/jobs").json()["items"] == []
    config = {k: v for k, v in distill_spec(dataset["id"], model=unsupported).items()
              if k not in ("kind", "dataset_id")}
    nested = _problem(client.post("/v1/jobs", json={"kind": "distill", "dataset_id": dataset["id"], "config": config}))
    assert nested["errors"][0]["field"] == "config.student_model"
    ev = {"kind": "evaluate", "dataset_id": dataset["id"], "student_model": unsupported}
    assert _problem(client.post("/v1/jobs", json=ev))["code"] == "unsupported_architecture"


def test_an_unsupported_teacher_is_refused_only_when_it_is_run(client, dataset, unsupported) -> None:  # type: ignore[no-untyped-def]
    problem = _problem(client.post("/v1/jobs", json=distill_spec(dataset["id"], teacher_model=unsupported)))
    assert problem["code"] == "unsupported_architecture" and problem["errors"][0]["field"] == "teacher_model"
    # without a teacher signal the teacher is never loaded: nothing to refuse
    r = client.post("/v1/jobs", json=distill_spec(dataset["id"], teacher_model=unsupported,
                                                   loss={"teacher_signal": "none"}))
    assert r.status_code == 202, r.text


def test_supported_local_models_are_accepted(client, dataset) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/jobs", json=distill_spec(dataset["id"], teacher_model="teacher"))
    assert r.status_code == 202, r.text
