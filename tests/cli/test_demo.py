"""``distillery demo`` end to end, short (a few training steps), as a user runs it: a subprocess whose output
is not a terminal, on the test database and a fresh data dir. It must print the before/after summary, write
the plots and summary.json, and leave everything in the database."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import truncate_all

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_database(database_url: str) -> Iterator[str]:
    """The test database for a demo that commits for real: every table is truncated afterwards, so no later
    test (in any order) sees the demo's trajectories, dataset or job."""
    yield database_url
    engine = create_engine(database_url)
    try:
        truncate_all(engine)
    finally:
        engine.dispose()


def test_a_short_demo_runs_end_to_end(demo_database: str, tmp_path: Path) -> None:
    database_url = demo_database
    data, out_dir = tmp_path / "data", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("DISTILLERY_MODELS_ROOT", "DISTILLERY_DATABASE_URL")}
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--data-dir", str(data), "--database-url", database_url,
         "--port", "0", "--steps", "8", "--train-tasks", "32", "--held-out", "3", "--out", str(out_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    summary_line = re.fullmatch(r"student solved (\d)/3 held-out tasks \(was (\d)/3\)\n", run.stdout)
    assert summary_line, run.stdout
    log = run.stderr
    for step in range(1, 8):
        assert f"[{step}/7] " in log
    assert "32 trajectories stored (32 new), 0 failed" in log
    assert re.search(r"^step 8/8  loss \d+\.\d{4}", log, re.MULTILINE)  # plain progress lines: not a terminal
    assert "succeeded" in log and "distillery serve" in log and "DISTILLERY_API_KEY=dk_" in log

    for name in ("loss_curves.png", "before_after.png"):
        assert (out_dir / name).read_bytes().startswith(b"\x89PNG")
    summary = json.loads((out_dir / "summary.json").read_text())
    held_out = summary["held_out"]
    assert (held_out["after"]["n_success"], held_out["before"]["n_success"]) == tuple(map(int, summary_line.groups()))
    assert held_out["before"]["n"] == held_out["after"]["n"] == 3 and summary["steps"] == 8
    assert summary["eval_nll"]["after"]["action"] < summary["eval_nll"]["before"]["action"]

    # the student under the models root, the trained one in the job's run directory
    assert (data / "models" / "demo-student" / "config.json").is_file()
    job_id = summary["job_id"]
    assert (data / "jobs" / job_id / "final" / "model.safetensors").is_file()

    # everything stays in the database: the teacher's runs (approved), the dataset, the succeeded job
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            statuses = conn.execute(text("SELECT status, count(*) FROM trajectories WHERE source = 'distillery-demo' "
                                         "GROUP BY status")).all()
            job = conn.execute(text("SELECT status, dataset_id, config FROM jobs WHERE id = :id"),
                               {"id": job_id}).one()
            items = conn.execute(text("SELECT count(*) FROM dataset_items WHERE dataset_id = :id"),
                                 {"id": summary["dataset_id"]}).scalar_one()
    finally:
        engine.dispose()
    assert statuses == [("approved", 32)]
    assert job.status == "succeeded" and str(job.dataset_id) == summary["dataset_id"] and items == 32
    assert job.config["student_model"] == str((data / "models" / "demo-student").resolve())
