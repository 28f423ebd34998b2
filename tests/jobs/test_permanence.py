"""One permanence: the same bad distill job fails at once in-process (``resources.gpus=1``) and under
torchrun (``resources.gpus=2``, CPU ranks over gloo), never retried although attempts remain, with an
error that names the cause. The job is written with the queue directly (as a stored config reaches the
worker), so nothing the API checks at submit time stands in front of the worker's own rule."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.jobs import queue
from tests.jobs.conftest import CPU_TRAINING, make_dataset
from worker.loop import run_worker

LAUNCHERS = {"in-process": 1, "torchrun": 2}


def _mismatched_teacher(root: Path) -> tuple[dict[str, Any], str]:
    # "stranger" has a tokenizer trained on other text: KL against it is meaningless (TokenizerMismatch).
    return ({"student_model": str(root / "student"), "teacher_model": str(root / "stranger")},
            "tokenizers are incompatible")


def _missing_student(root: Path) -> tuple[dict[str, Any], str]:
    return {"student_model": str(root / "no-such-student")}, "no-such-student"  # ModelLoadError names it


@pytest.mark.parametrize("bad_job", [_mismatched_teacher, _missing_student], ids=["teacher-mismatch", "no-student"])
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_bad_job_fails_at_once_whichever_launcher_runs_it(committed, database, database_url, jobs_settings,  # type: ignore[no-untyped-def]
                                                            models_root: Path, monkeypatch, launcher: str,
                                                            bad_job: Any) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    dataset = make_dataset(committed, 4)
    models, cause = bad_job(models_root)
    config = {**models, "training": {**CPU_TRAINING, "max_steps": 2, "micro_batch_size": 1, "checkpoint_every": 0},
              "resources": {"device": "cpu", "gpus": LAUNCHERS[launcher]}}
    with database.engine.begin() as conn:
        job_id = queue.enqueue(conn, "distill", config, dataset_id=uuid.UUID(dataset["id"]), max_attempts=3)

    assert run_worker(database_url, jobs_settings, once=True, kinds=["distill"]) == 0
    job = committed.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"], job["max_attempts"]) == ("failed", 1, 3), job["error"]
    assert cause in job["error"]
    if launcher == "torchrun":
        # the ranks judged it permanent themselves (ExitCode.BAD_INPUT); a peer may have been killed meanwhile
        assert re.search(r"rank exit codes: \[[^\]]*\b2\b", job["error"]), job["error"]
    states = [e["message"] for e in committed.get(f"/v1/jobs/{job_id}/events", params={"kind": "state"}
                                                  ).json()["items"]]
    assert states[-1] == "failed" and not any("retry in" in s for s in states)
