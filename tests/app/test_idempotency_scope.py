"""An ``Idempotency-Key`` belongs to one API key and one endpoint.

Two tenants that happen to pick the same Idempotency-Key must never see each other's stored answers, and a
key used on one endpoint is not a replay on another (the stored answer has another shape there).
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.app.payloads import openai


def _tenant(client: TestClient, name: str, scopes: list[str]) -> dict[str, str]:
    r = client.post("/v1/keys", json={"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


def test_the_same_idempotency_key_under_two_api_keys_is_two_requests(client: TestClient) -> None:
    alice, bob = _tenant(client, "alice", ["ingest"]), _tenant(client, "bob", ["ingest"])
    first = client.post("/v1/trajectories", json=openai("alice-1"), headers={**alice, "Idempotency-Key": "k"})
    assert first.status_code == 201, first.text
    # Bob's body differs: under a shared key this would be a 409 (or, with Alice's body, her stored answer).
    theirs = client.post("/v1/trajectories", json=openai("bob-1"), headers={**bob, "Idempotency-Key": "k"})
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["id"] != first.json()["id"]
    again = client.post("/v1/trajectories", json=openai("bob-1"), headers={**bob, "Idempotency-Key": "k"})
    assert again.status_code == 200 and again.json()["id"] == theirs.json()["id"]  # Bob's own replay still works


def test_a_replay_never_returns_another_tenants_answer(client: TestClient) -> None:
    alice, bob = _tenant(client, "alice", ["ingest"]), _tenant(client, "bob", ["ingest"])
    body = openai("shared-1")
    first = client.post("/v1/trajectories", json=body, headers={**alice, "Idempotency-Key": "same"})
    assert first.status_code == 201
    replayed = client.post("/v1/trajectories/batch", json={"items": [openai("bob-batch")]},
                           headers={**bob, "Idempotency-Key": "same"})
    assert replayed.status_code == 200, replayed.text
    answer: dict[str, Any] = replayed.json()
    assert answer["items"][0]["status"] == 201 and answer["items"][0]["id"] != first.json()["id"]


def test_an_idempotency_key_is_scoped_to_its_endpoint(client: TestClient) -> None:
    body = openai("endpoint-1")
    created = client.post("/v1/trajectories", json=body, headers={"Idempotency-Key": "ep"})
    assert created.status_code == 201
    # The very same body, sent to another endpoint under the same key: refused, never the trajectory receipt.
    other = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "ep"})
    assert other.status_code == 409, other.text
    assert other.json()["code"] == "idempotency_key_reused"
