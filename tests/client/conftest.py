"""A real API server for the client's tests: uvicorn on a free port in a thread, over the committing app
(tables truncated after each test), which a test can stop and start again on the same port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY


class Server:
    """The API on ``url``; ``start()``/``stop()`` bring it up and down (the port stays the same)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = ADMIN_KEY
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None,
                                                     access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None


@pytest.fixture
def down_server(committed_app) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """A server that is not started yet: its port refuses connections until ``start()``."""
    server = Server(committed_app)
    yield server
    server.stop()


@pytest.fixture
def server(down_server: Server) -> Server:
    down_server.start()
    return down_server


@pytest.fixture
def fast_retry():  # type: ignore[no-untyped-def]
    """Quick retries (tests wait on servers that are down on purpose)."""
    from distillery import Retry

    return Retry(attempts=3, backoff=0.01, max_backoff=0.05)
