"""Real concurrency: identical requests racing resolve to one stored trajectory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.app.payloads import openai


def _race(client, n, make):  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(make, range(n)))


def test_identical_posts_race_to_one_row(committed_client):
    results = _race(committed_client, 6, lambda _: committed_client.post("/v1/trajectories", json=openai("race")))
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 5 + [201], [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert len(committed_client.get("/v1/trajectories?source=support-agent").json()["items"]) == 1


def test_idempotency_key_race(committed_client):
    body = openai("idem-race")
    body.pop("external_id")

    def post(i: int):  # type: ignore[no-untyped-def]
        return committed_client.post("/v1/trajectories", json=body, headers={"Idempotency-Key": "same"})

    results = _race(committed_client, 4, post)
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in results}) == 1

    def post_different(i: int):  # type: ignore[no-untyped-def]
        return committed_client.post("/v1/trajectories", json={**body, "reward": float(i)},
                                     headers={"Idempotency-Key": "other"})

    results = _race(committed_client, 4, post_different)
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409]
