"""What a model reference names on a worker (``worker.models.resolve_reference``): ``job:<id>`` → that job's
``final/`` folder in the worker's data dir, a name → its folder under the models root, anything else as given.
Jobs submitted over HTTP arrive resolved (``tests/jobs/test_models_submit.py`` runs one on a worker)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from worker.context import BadJobInput, is_permanent
from worker.models import resolve_reference


def test_references_on_a_worker(tmp_path: Path) -> None:
    from app.config import Settings

    settings = Settings(data_dir=tmp_path / "data", models_root=tmp_path / "models")
    job_id = uuid.uuid4()
    assert resolve_reference(f"job:{job_id}", settings) == str(tmp_path / "data" / "jobs" / str(job_id) / "final")
    (tmp_path / "models" / "Org" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "Org" / "tiny" / "config.json").write_text("{}")
    assert resolve_reference("Org/tiny", settings) == str((tmp_path / "models" / "Org" / "tiny").resolve())
    # a hub id with no local folder, an absolute path, a name that would leave the root: as given
    for ref in ("Qwen/Qwen2.5-0.5B-Instruct", "/elsewhere/model", "../models/Org/tiny"):
        assert resolve_reference(ref, settings) == ref
    with pytest.raises(BadJobInput) as caught:
        resolve_reference("job:last-week", settings)
    assert is_permanent(caught.value) and "job:<job id>" in str(caught.value)
