"""Bounded memory per request (issue #13, finding 4): a 64 MiB body costs about its own size, never the
gigabytes its parsed form would take. Measured on a real server process (a uvicorn subprocess): its
peak resident memory (``VmHWM``, reset before each request) must stay under the bound
``docs/reliability.md`` states: the body's bytes plus ``PARSED_FACTOR`` times them plus ``BASE``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.live import free_port
from tests.conftest import ADMIN_KEY

MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
BASE = 64 * MIB  # per-request working memory beside the body (threads, buffers, the response)
PARSED_FACTOR = 7  # parsed values within the value budget cost at most this many times the body's bytes


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to read a process's peak memory")
    port = free_port()
    env = {**os.environ, "DISTILLERY_DATABASE_URL": database_url, "DISTILLERY_ADMIN_KEY": ADMIN_KEY,
           "DISTILLERY_DATA_DIR": str(tmp_path), "DISTILLERY_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:create_worker_process_app", "--factory",
                             "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def _peak_growth(pid: int, base: str, path: str, body: bytes) -> tuple[int, httpx.Response]:
    """POST ``body`` and return (peak RSS during the request minus RSS before it, the response)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status(pid, "VmRSS")
    r = httpx.post(base + path, content=body, timeout=300,
                   headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"})
    return _status(pid, "VmHWM") - before, r


def _bodies() -> dict[str, bytes]:
    n = 64 * MIB
    empty_items = b'{"items":[' + b"{}," * ((n - 16) // 3) + b"{}]}"  # 22 M objects: the finding's 2 GB body
    # the costliest body the value budget lets through: one value per 17 bytes, each a 14-character string
    strings = b'{"items":[{"format":"openai","source":"s","metadata":{"k":[' + b'"abcdefghijklmn",' * (
        (n - 200) // 17) + b'"x"]}}]}'
    return {"empty_items": empty_items, "strings_within_budget": strings}


@pytest.mark.parametrize("shape", ["empty_items", "strings_within_budget"])
def test_a_64_mib_batch_stays_within_the_memory_bound(server, shape):
    base, pid = server
    body = _bodies()[shape]
    assert len(body) <= 64 * MIB
    growth, r = _peak_growth(pid, base, "/v1/trajectories/batch", body)
    bound = len(body) * (1 + PARSED_FACTOR) + BASE
    print(f"{shape}: {len(body) / MIB:.0f} MiB body, answer {r.status_code}, peak growth {growth / MIB:.0f} MiB, "
          f"bound {bound / MIB:.0f} MiB")
    assert growth <= bound, f"{growth / MIB:.0f} MiB over the {bound / MIB:.0f} MiB bound"
    refused = r.status_code == 413 or (r.status_code == 200 and r.json()["failed"] == 1)
    assert refused and r.headers["content-type"].startswith("application/"), r.text[:300]
    assert httpx.get(f"{base}/readyz").status_code == 200
