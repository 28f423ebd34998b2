"""``distillery jobs …`` against a real HTTP server (uvicorn in a thread) and a real worker: submit from a
file and from stdin, list, show, follow (live SSE; exit code = outcome), cancel, errors, artifacts."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY
from tests.jobs.conftest import distill_spec, make_dataset
from worker.loop import start_background_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api_url(committed_app, committed) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(committed_app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _cli(api: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISTILLERY_API_URL": api, "DISTILLERY_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cli.main", "jobs", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_jobs_cli_end_to_end(api_url, committed, database_url, jobs_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dataset = make_dataset(committed, 4)
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps(distill_spec(dataset["id"], training={"max_steps": 4})))

    out = _cli(api_url, "submit", str(spec_file))
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["status"] == "queued"

    stop = start_background_worker(database_url, jobs_settings, kinds=["distill"], poll_interval=0.5)
    try:
        followed = _cli(api_url, "follow", job["id"])
    finally:
        stop()
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.strip() == f"{job['id']} succeeded"
    # not a terminal: plain lines (state changes, progress with the last step), not a live bar that prints nothing
    assert "running on" in followed.stderr
    assert re.search(r"^step 4/4  loss \d+\.\d{4}  [\d,]+ tok/s  ETA 0:00:00$", followed.stderr, re.MULTILINE)

    shown = json.loads(_cli(api_url, "show", job["id"]).stdout)
    assert shown["status"] == "succeeded" and shown["progress"]["step"] == 4
    listed = _cli(api_url, "list", "--json", "--status", "succeeded")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [job["id"]]
    assert job["id"] in _cli(api_url, "list").stdout

    arts = _cli(api_url, "artifacts", job["id"], "--prefix", "final", "--download", str(tmp_path / "dl"))
    assert arts.returncode == 0, arts.stderr
    assert (tmp_path / "dl" / "final" / "model.safetensors").stat().st_size > 0
    assert "model" in _cli(api_url, "artifacts", job["id"]).stdout
    assert json.loads(_cli(api_url, "lineage", job["id"]).stdout)["dataset"]["id"] == dataset["id"]

    # from stdin, then cancelled while queued (no worker): follow exits 1 with the status
    queued = json.loads(_cli(api_url, "submit", "-", stdin=spec_file.read_text()).stdout)
    assert _cli(api_url, "cancel", queued["id"]).stdout.strip() == f"{queued['id']} cancelled"
    followed = _cli(api_url, "follow", queued["id"])
    assert followed.returncode == 1 and followed.stdout.strip() == f"{queued['id']} cancelled"
    assert _cli(api_url, "retry", queued["id"]).stdout.strip() == f"{queued['id']} queued"

    bad = _cli(api_url, "submit", "-", stdin=json.dumps({**distill_spec(dataset["id"]), "student_model": "../../etc"}))
    assert bad.returncode == 1 and "model_path_not_allowed" in bad.stderr and "student_model" in bad.stderr
    unreachable = _cli("http://127.0.0.1:9", "list")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
