"""Every route but health, metrics and docs needs a key holding its scope."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from app.auth import SCOPES

PUBLIC = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/docs/assets", "/openapi.json",
          "/", "/ui"}  # the web page's static files (app/web): the page itself calls /v1 with the user's key


def _required_scopes(route: APIRoute) -> set[str]:
    found: set[str] = set()
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        scope = getattr(dep.call, "required_scope", None)
        if scope is not None:
            found |= {scope} if isinstance(scope, str) else set(scope)
        stack.extend(dep.dependencies)
    return found


def _routes(app):  # type: ignore[no-untyped-def]
    """(method, path, APIRoute) for every route the app serves, included routers flattened."""
    for ctx in iter_route_contexts(app.routes):
        path = ctx.path or ""
        if path in PUBLIC:
            continue
        route = ctx.original_route
        assert isinstance(route, APIRoute), f"{path} is not an API route; add it to PUBLIC deliberately"
        for method in (ctx.methods or set()) - {"HEAD", "OPTIONS"}:
            yield method, path, route


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)


def test_every_route_declares_a_scope(app):
    for method, path, route in _routes(app):
        assert _required_scopes(route), f"{method} {path} checks no scope"


def test_no_route_answers_without_a_key_or_with_the_wrong_scope(app, client):
    keys = {}
    for scope in SCOPES:
        r = client.post("/v1/keys", json={"name": f"k-{scope}", "scopes": [scope]})
        assert r.status_code == 201, r.text
        keys[scope] = r.json()["key"]
    anonymous = TestClient(app)
    checked = 0
    for method, path, route in _routes(app):
        url = _fill(path)
        r = anonymous.request(method, url, json={})
        assert r.status_code == 401, f"{method} {path} answered {r.status_code} without a key"
        assert r.headers["content-type"].startswith("application/problem+json")
        r = anonymous.request(method, url, json={}, headers={"Authorization": "Bearer dk_nope_nope"})
        assert r.status_code == 401
        required = _required_scopes(route)
        for scope in SCOPES:
            if scope in required or scope == "admin":
                continue
            r = anonymous.request(method, url, json={}, headers={"Authorization": f"Bearer {keys[scope]}"})
            assert r.status_code == 403, f"{method} {path} let a '{scope}' key through ({r.status_code})"
            assert r.json()["code"] == "missing_scope"
        checked += 1
    assert checked >= 8


def test_key_lifecycle(app, client):
    r = client.post("/v1/keys", json={"name": "agent", "scopes": ["ingest"]})
    key = r.json()
    assert key["key"].startswith("dk_") and key["scopes"] == ["ingest"]
    listed = client.get("/v1/keys").json()["items"]
    assert any(k["id"] == key["id"] for k in listed) and all("key" not in k for k in listed)
    agent = TestClient(app, headers={"Authorization": f"Bearer {key['key']}"})
    from tests.app.payloads import openai

    assert agent.post("/v1/trajectories", json=openai("auth-1")).status_code == 201
    assert agent.get("/v1/trajectories").status_code == 403
    assert client.delete(f"/v1/keys/{key['id']}").json()["revoked_at"] is not None
    r = agent.post("/v1/trajectories", json=openai("auth-2"))
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"


@pytest.mark.parametrize("body", [{"name": "x", "scopes": ["root"]}, {"name": "", "scopes": ["ingest"]},
                                  {"name": "x", "scopes": []}])
def test_key_validation(client, body):
    r = client.post("/v1/keys", json=body)
    assert r.status_code == 422 and r.json()["errors"]
