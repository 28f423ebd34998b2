"""Committed datasets read from outside the API: ``distillery datasets export`` in a subprocess, and
the worker's read of a job's records (``JobContext.dataset_records`` through ``worker.store.Store``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.datasets.helpers import create, ingest_approved
from worker.context import JobContext, PermanentJobError
from worker.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISTILLERY_DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_export_writes_what_the_api_streams(committed_client, database_url, tmp_path):
    for i in range(4):
        ingest_approved(committed_client, f"cli-{i}")
    ds = create(committed_client, "cli", eval_fraction=0.5, seed=2).json()
    assert ds["counts"]["items"] == 4
    for fmt, split, n in (("jsonl", "all", 4), ("openai", "train", ds["counts"]["train"])):
        out = tmp_path / f"{fmt}-{split}.jsonl"
        done = _cli("datasets", "export", ds["id"], "--format", fmt, "--split", split, "--out", str(out),
                    database_url=database_url)
        assert done.returncode == 0, done.stderr
        assert f"wrote {n} records to {out}" in done.stderr
        api = committed_client.get(f"/v1/datasets/{ds['id']}/export", params={"format": fmt, "split": split})
        assert out.read_bytes() == api.content and len(out.read_text().splitlines()) == n
        assert not out.with_name(out.name + ".partial").exists()
    missing = _cli("datasets", "export", str(uuid.uuid4()), "--out", str(tmp_path / "x.jsonl"),
                   database_url=database_url)
    assert missing.returncode == 1 and "no dataset" in missing.stderr and not (tmp_path / "x.jsonl").exists()
    bad = _cli("datasets", "export", ds["id"], "--format", "csv", "--out", str(tmp_path / "y.jsonl"),
               database_url=database_url)
    assert bad.returncode == 2


@pytest.fixture
def store(database_url: str, settings: Any) -> Iterator[Store]:
    store = Store(database_url, settings)
    yield store
    store.close()


def _ctx(settings: Any, store: Store, tmp_path: Path, dataset_id: uuid.UUID | None,
         config: dict[str, Any] | None = None) -> JobContext:
    return JobContext(job_id=uuid.uuid4(), kind="distill", config=config or {}, attempt=1, max_attempts=1,
                      dataset_id=dataset_id, out_dir=tmp_path, settings=settings, store=store,
                      _report_progress=lambda p: None, _log=lambda m, level, data: None, _should_stop=lambda: False)


def test_worker_reads_the_snapshot_records(committed_client, database, store, settings, tmp_path):
    ingest_approved(committed_client, "w-1")
    ingest_approved(committed_client, "w-2")
    ds = create(committed_client, "worker", eval_fraction=0.5, seed=4).json()
    exported = [json.loads(line) for line in committed_client.get(f"/v1/datasets/{ds['id']}/export").text.splitlines()]

    records = _ctx(settings, store, tmp_path, uuid.UUID(ds["id"])).dataset_records()
    assert records == exported and len(records) == 2
    assert {r["split"] for r in records} <= {"train", "eval"} and all(0 <= r["complexity"] <= 1 for r in records)
    assert _ctx(settings, store, tmp_path, None, {"dataset_id": ds["id"]}).dataset_records() == records

    missing = uuid.uuid4()
    with pytest.raises(PermanentJobError, match=f"dataset {missing} not found"):
        _ctx(settings, store, tmp_path, missing).dataset_records()
    with pytest.raises(PermanentJobError, match="a job of kind 'distill' needs a dataset_id"):
        _ctx(settings, store, tmp_path, None).dataset_records()
    with pytest.raises(PermanentJobError, match="'nope' is not a uuid"):
        _ctx(settings, store, tmp_path, None, {"dataset_id": "nope"}).dataset_records()

    empty = uuid.uuid4()  # the API never freezes an empty dataset; a row written by hand stands in for one
    with database.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO datasets (id, name, filter, statuses, eval_fraction, seed, dedupe, n_items, n_train, n_eval,"
            " content_sha256, stats) VALUES (:id, 'empty', '{}', '{approved}', 0.2, 0, false, 0, 0, 0, '', '{}')"),
            {"id": empty})
    try:
        with pytest.raises(PermanentJobError, match=f"dataset {empty} is empty"):
            store.load_dataset_records(empty)
    finally:
        with database.engine.begin() as conn:
            conn.execute(text("DELETE FROM datasets WHERE id = :id"), {"id": empty})
