"""Streams release their session when the client goes away (issue #13, finding 1): aborted and
stalled exports leave no session "idle in transaction" and every route keeps answering."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text

from tests.app.live import live_server
from tests.app.payloads import padded_openai
from tests.conftest import ADMIN_KEY

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _dataset(client) -> str:  # type: ignore[no-untyped-def]
    """A dataset whose export (~6 MB) cannot sit in the socket buffers of a client that reads 4 KB."""
    for start in range(0, 300, 100):
        items = [padded_openai(f"s-{i}", 20_000) for i in range(start, start + 100)]
        assert client.post("/v1/trajectories/batch", json={"items": items}).json()["created"] == 100
    r = client.post("/v1/trajectories/review/bulk", json={"action": "approve", "filter": {"source": "support-agent"}})
    assert r.json()["changed"] == 300
    r = client.post("/v1/datasets", json={"name": "big", "filter": {"source": "support-agent"}})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _idle_in_transaction(database) -> int:  # type: ignore[no-untyped-def]
    with database.engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'")).scalar_one())


def _open_export(base: str, dataset_id: str) -> socket.socket:
    """Start an export and read its first 4 KB, with a receive window small enough to stall the server."""
    host = urlsplit(base)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect((host.hostname, host.port))
    sock.sendall(f"GET /v1/datasets/{dataset_id}/export HTTP/1.1\r\nHost: t\r\n"
                 f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n".encode())
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


def test_aborted_and_stalled_exports_release_their_sessions(committed_client, committed_app, database):
    dataset_id = _dataset(committed_client)
    with live_server(committed_app) as base:
        for _ in range(100):  # the client goes away mid-export (Ctrl-C, a network blip)
            _open_export(base, dataset_id).close()
        stalled = [_open_export(base, dataset_id) for _ in range(30)]  # open, never read: more than the pool
        try:
            with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
                assert http.get("/readyz").status_code == 200
                assert http.get("/v1/trajectories?limit=1").status_code == 200
                assert http.get(f"/v1/datasets/{dataset_id}").status_code == 200
                full = http.get(f"/v1/datasets/{dataset_id}/export")
                assert full.status_code == 200 and full.text.count("\n") == 300
                deadline = time.monotonic() + 10
                while _idle_in_transaction(database) and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert _idle_in_transaction(database) == 0
        finally:
            for sock in stalled:
                sock.close()


def test_a_client_that_never_finishes_its_headers_is_disconnected(committed_app, monkeypatch):
    import threading

    import uvicorn

    from app.serving import TimedHttpToolsProtocol, uvicorn_options
    from tests.app.live import free_port

    assert uvicorn_options()["http"] is TimedHttpToolsProtocol  # what ``distillery serve`` runs
    monkeypatch.setattr(TimedHttpToolsProtocol, "header_timeout", 0.5)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(committed_app, host="127.0.0.1", port=port, log_config=None,
                                           http=TimedHttpToolsProtocol, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port), timeout=20)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # ... and the rest never comes
        assert slow.recv(1024) == b""  # closed by the server, long before the 20 s this client waits
        fine = socket.create_connection(("127.0.0.1", port), timeout=20)
        fine.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert fine.recv(1024).startswith(b"HTTP/1.1 200")
        # The deadline is the head's alone: a body that takes longer than it is still answered ...
        fine.sendall(b"POST /v1/trajectories HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\nContent-Length: 2\r\n\r\n")
        time.sleep(1.0)  # twice the header deadline, well inside the body's
        fine.sendall(b"{}")
        assert fine.recv(4096).startswith(b"HTTP/1.1 422")  # read and answered, not cut off
        # ... and after each response the next head has the same deadline again.
        fine.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert fine.recv(1024) == b""
        fine.close()
        slow.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_client_that_stalls_in_its_body_gets_408(database, settings):
    from app.main import create_app

    slow_app = create_app(settings.model_copy(update={"request_body_timeout_seconds": 0.5}), database=database,
                          migrate=False)
    with live_server(slow_app) as base:
        host = urlsplit(base)
        sock = socket.create_connection((host.hostname, host.port), timeout=20)
        sock.sendall(b"POST /v1/trajectories HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"format\"")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer
        sock.close()
