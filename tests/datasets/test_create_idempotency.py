"""POST /v1/datasets with an Idempotency-Key: a retried request answers the snapshot it made first (no second
snapshot), the same key with another body is a 409, and without a key every request freezes a new snapshot."""

from __future__ import annotations

from tests.datasets.helpers import PROBLEM, ingest_approved


def _count(client) -> int:  # type: ignore[no-untyped-def]
    return len(client.get("/v1/datasets?limit=1000").json()["items"])


def test_retried_create_answers_the_first_snapshot(client) -> None:  # type: ignore[no-untyped-def]
    ingest_approved(client, "idem-a")
    body = {"name": "retried", "eval_fraction": 0.0}
    first = client.post("/v1/datasets", json=body, headers={"Idempotency-Key": "ds-1"})
    assert first.status_code == 201, first.text
    n = _count(client)
    again = client.post("/v1/datasets", json=body, headers={"Idempotency-Key": "ds-1"})
    assert again.status_code == 200
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert _count(client) == n  # nothing frozen twice

    other = client.post("/v1/datasets", json={**body, "name": "other"}, headers={"Idempotency-Key": "ds-1"})
    assert other.status_code == 409 and other.headers["content-type"] == PROBLEM
    assert other.json()["code"] == "idempotency_key_reused"

    plain = [client.post("/v1/datasets", json=body) for _ in range(2)]
    assert [r.status_code for r in plain] == [201, 201] and plain[0].json()["id"] != plain[1].json()["id"]
    assert _count(client) == n + 2
