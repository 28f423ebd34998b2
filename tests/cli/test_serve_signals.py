"""Stopping ``distillery serve --with-worker`` (what ``./dev up`` runs) with SIGTERM stops everything: the API,
the worker (unregistered) and the embedded Postgres — with a real process, as a service manager stops it.
uvicorn re-raises SIGTERM once it has shut down; before the fix the process died there, cleanup never ran."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    full.update(DISTILLERY_DATA_DIR=str(tmp_path / "data"), DISTILLERY_WORKER_POLL_INTERVAL="0.5", **env)
    log = (tmp_path / "serve.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--with-worker", "--port", str(port)],
                            cwd=ROOT, env=full, stdout=log, stderr=subprocess.STDOUT)


def _wait(what: str, check, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"serve did not stop on SIGTERM: {log.read_text()[-3000:]}") from None


def test_sigterm_stops_the_api_and_unregisters_the_worker(database_url: str, tmp_path: Path) -> None:
    port = _free_port()
    proc = _serve(tmp_path, port, DISTILLERY_DATABASE_URL=database_url)
    log = tmp_path / "serve.log"
    engine = create_engine(database_url)
    mine = {"pattern": f"%:{proc.pid}:%"}

    def registered() -> bool:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM workers WHERE id LIKE :pattern"), mine).scalar_one() == 1

    try:
        _wait("the API", lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, proc, log)
        _wait("the worker to register", registered, proc, log)
        assert _stop(proc, log) == 0
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM workers WHERE id LIKE :pattern"), mine).scalar_one() == 0
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    assert "worker stopped" in log.read_text()


def test_sigterm_stops_the_embedded_postgres(tmp_path: Path) -> None:
    port = _free_port()
    proc = _serve(tmp_path, port)
    log = tmp_path / "serve.log"
    pid_file = tmp_path / "data" / "pgdata" / "postmaster.pid"
    try:
        _wait("the API on the embedded Postgres",
              lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, proc, log, timeout=240)
        postmaster = int(pid_file.read_text().split()[0])
        os.kill(postmaster, 0)  # running
        assert _stop(proc, log) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(postmaster, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(postmaster, signal.SIGKILL)
        raise AssertionError(f"the embedded Postgres {postmaster} still runs: {log.read_text()[-3000:]}")
    assert not pid_file.exists()
