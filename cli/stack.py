"""Running the server in this process: how a SIGTERM stops it, and the whole stack for ``distillery demo``.

``exit_on_sigterm``: SIGTERM becomes ``SystemExit(0)``, so ``finally`` blocks and ``atexit`` handlers run
(the worker hands its job back and unregisters; the embedded Postgres is stopped). uvicorn handles
SIGTERM while it serves and re-raises it once it has shut down: with the default action the process
died right there and nothing was cleaned up.

``running_stack``: Postgres (the configured URL, or the embedded server in the data dir), migrated;
the API under uvicorn in a thread; a job worker in another; and an API key with every scope. Leaving
it stops the API and the worker (a running job is handed back) and disposes the engine; the embedded
Postgres stops when the process exits. Everything written stays in the database and the data dir.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from app.config import Settings


def exit_on_sigterm() -> None:
    """From now on SIGTERM exits this process cleanly (``SystemExit(0)``); a second one during the cleanup
    is ignored, so it cannot cut the cleanup short (SIGKILL still ends everything)."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)


@dataclass(frozen=True)
class Stack:
    settings: Settings
    database_url: str
    api_url: str
    api_key: str


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when it can be bound now, else a free port the system picks (0 asks for one at once)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, preferred))
        except OSError:
            s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_stack(settings: Settings, *, port: int, host: str = "127.0.0.1", key_name: str = "demo",
                  poll_interval: float = 1.0) -> Iterator[Stack]:
    """Start Postgres (migrated), a worker and the API; yield where they are; stop the API and the worker."""
    import uvicorn

    from app.auth import SCOPES, create_key
    from app.db import Database
    from app.embedded import resolve_database_url
    from app.main import create_app
    from app.migrate import upgrade
    from worker.loop import start_background_worker

    url = resolve_database_url(settings.database_url, settings.pgdata_dir)
    upgrade(url)
    settings = settings.model_copy(update={"database_url": url})
    database = Database(url, settings)
    with database.sessionmaker.begin() as session:
        _, key = create_key(session, key_name, list(SCOPES))
    port = free_port(port, host)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, database=database, migrate=False), host=host,
                                           port=port, log_config=None, access_log=False))
    api = threading.Thread(target=server.run, name="distillery-api", daemon=True)
    stop_worker = start_background_worker(url, settings, poll_interval=poll_interval)
    try:
        api.start()
        deadline = time.monotonic() + 60
        while not server.started:
            if not api.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {host}:{port}")
            time.sleep(0.05)
        yield Stack(settings, url, f"http://{host}:{port}", key)
    finally:
        server.should_exit = True
        api.join(timeout=15)
        stop_worker()
        database.dispose()
