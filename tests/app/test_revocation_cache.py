"""Revocation with the key cache on (the production default): a revoked key is refused by the process that
revoked it at once, and by every other API process as soon as the NOTIFY reaches it (docs/reliability.md),
long before the cache would have let the key expire.

The key is cached first (a successful request), so a cache that is never evicted would keep accepting it.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.app.payloads import openai
from tests.conftest import ADMIN_KEY, truncate_all

LONG = 3600.0  # a key would stay trusted this long without eviction


def _new_key(admin: TestClient) -> tuple[str, dict[str, str]]:
    r = admin.post("/v1/keys", json={"name": "agent", "scopes": ["ingest"]})
    assert r.status_code == 201, r.text
    return r.json()["id"], {"Authorization": f"Bearer {r.json()['key']}"}


def _until(what: str, check: Any, timeout: float = 10.0) -> Any:
    """Poll ``check`` until it is truthy; the timeout only bounds a broken run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_revoking_process_refuses_the_key_at_once(database: Any, settings: Any) -> None:
    """Without its listener (no NOTIFY can help), the process that revokes evicts the key itself."""
    from app.auth import hash_key
    from app.main import create_app

    app: FastAPI = create_app(settings.model_copy(update={"auth_cache_seconds": LONG}), database=database,
                              migrate=False)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        app.state.listener.stop()
        key_id, auth = _new_key(admin)
        assert admin.post("/v1/trajectories", json=openai("rc-1"), headers=auth).status_code == 201
        assert app.state.key_cache.get(hash_key(auth["Authorization"].removeprefix("Bearer "))) is not None
        assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
        r = admin.post("/v1/trajectories", json=openai("rc-2"), headers=auth)
        assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    truncate_all(database.engine)


def test_another_process_refuses_the_key_once_the_notify_arrives(database: Any, settings: Any) -> None:
    from app.main import create_app

    cached = settings.model_copy(update={"auth_cache_seconds": LONG})
    first, second = (create_app(cached, database=database, migrate=False) for _ in range(2))
    try:
        with TestClient(first, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin, TestClient(second) as other:
            _until("the second process's listener", second.state.listener.connected.is_set)
            key_id, auth = _new_key(admin)
            for i, client in enumerate((admin, other)):  # both processes now trust the key from memory
                assert client.post("/v1/trajectories", json=openai(f"rx-{i}"), headers=auth).status_code == 201
            assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
            codes: list[int] = []

            def refused() -> bool:
                r = other.post("/v1/trajectories", json=openai(f"ry-{len(codes)}"), headers=auth)
                codes.append(r.status_code)
                return r.status_code == 401 and r.json()["code"] == "invalid_api_key"

            _until("the other process to refuse the revoked key", refused)
            assert set(codes) <= {201, 401}
            # and it stays refused (not a one-off miss)
            assert other.get("/v1/trajectories", headers=auth).status_code == 401
    finally:
        truncate_all(database.engine)

