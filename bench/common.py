"""Helpers shared by the benchmark scripts: a throwaway database, a server subprocess, tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


@contextmanager
def scratch_database(server_url: str | None = None) -> Iterator[str]:
    """A fresh, migrated database on the given server (default: the embedded one); dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app.embedded import resolve_database_url, start_embedded
    from app.migrate import upgrade

    if server_url:
        base = resolve_database_url(server_url, Path("/nonexistent"))
    else:
        import platformdirs

        base = start_embedded(Path(platformdirs.user_cache_dir("distillery-bench")) / "pgdata")
    server = make_url(base)
    name = f"distillery_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_server(database_url: str, admin_key: str, extra_env: dict[str, str] | None = None,
               workers: int = 1) -> Iterator[str]:
    """``distillery serve`` in a subprocess on a free port; yields its base URL."""
    import httpx

    port = free_port()
    env = {**os.environ, "DISTILLERY_DATABASE_URL": database_url, "DISTILLERY_ADMIN_KEY": admin_key,
           "DISTILLERY_LOG_LEVEL": "WARNING", **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", str(workers)],
                            cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError("the API server exited during start-up")
            time.sleep(0.2)
        else:
            raise RuntimeError("the API server did not become ready")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
