"""Shared helpers for the annotation API tests: ingest a trajectory, run SQL in the test's
transaction, make a client holding a key with given scopes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.app.payloads import openai

PROBLEM = "application/problem+json"

# The automatic spans of tests.app.payloads.OPENAI (message texts in comments):
#   m2 "I should look it up.\n<tool_call>\n{…}\n</tool_call>", m3 '{"temp_c": 21}', m4 "It is 21°C in NYC."
AUTO = [
    {"message": 2, "start": 0, "end": 21, "kind": "reason"},
    {"message": 2, "start": 21, "end": 99, "kind": "action"},
    {"message": 3, "start": 0, "end": 14, "kind": "observation"},
    {"message": 4, "start": 0, "end": 18, "kind": "action"},
]


def ingest(client: TestClient, external_id: str, **overrides: Any) -> str:
    r = client.post("/v1/trajectories", json=openai(external_id, **overrides))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def sql(app: Any, statement: str, **params: Any) -> list[Any]:
    """Run SQL inside the test's outer transaction (rolled back after the test)."""
    gen = app.state.session_factory()
    session = next(gen)
    result = session.execute(text(statement), params)
    rows = list(result) if result.returns_rows else []
    for _ in gen:  # commits the savepoint
        pass
    return rows


def keyed_client(app: Any, admin: TestClient, scopes: list[str], name: str = "k") -> TestClient:
    r = admin.post("/v1/keys", json={"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    return TestClient(app, headers={"Authorization": f"Bearer {r.json()['key']}"})


def put_spans(client: TestClient, tid: str, spans: list[dict[str, Any]], etag: str | None = '"1"',
              **extra: Any) -> Any:
    headers = {"If-Match": etag} if etag is not None else {}
    return client.put(f"/v1/trajectories/{tid}/spans", json={"spans": spans, **extra}, headers=headers)


def edit(client: TestClient, tid: str, ops: list[dict[str, Any]], etag: str | None = '"1"', **extra: Any) -> Any:
    headers = {"If-Match": etag} if etag is not None else {}
    return client.post(f"/v1/trajectories/{tid}/spans/edits", json={"ops": ops, **extra}, headers=headers)
