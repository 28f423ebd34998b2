"""The annotation queue: claim (oldest pending first, never twice), leases, expiry, holder checks."""

from __future__ import annotations

import uuid

from tests.annotations.helpers import PROBLEM, ingest, keyed_client, sql

CLAIM = "/v1/annotation-queue/claim"


def _claim(client, **body):  # type: ignore[no-untyped-def]
    return client.post(CLAIM, json=body)


def _age(app, tid, minutes):  # type: ignore[no-untyped-def]
    """All rows of one test share now(): give them distinct creation times."""
    sql(app, "UPDATE trajectories SET created_at = now() - make_interval(mins => :m) WHERE id = :id",
        m=minutes, id=tid)


def test_claims_hand_out_oldest_pending_first_and_never_twice(app, client):
    second = ingest(client, "q-2")
    first = ingest(client, "q-1")
    _age(app, second, 1)
    _age(app, first, 2)
    r1 = _claim(client)
    assert r1.status_code == 200, r1.text
    body = r1.json()
    assert body["trajectory"]["id"] == first and body["trajectory"]["status"] == "pending"
    lease = body["lease"]
    assert lease["trajectory_id"] == first and lease["holder_key_id"] == "bootstrap-admin"
    assert lease["ended_at"] is None and lease["expires_at"] > lease["claimed_at"]
    r2 = _claim(client)
    assert r2.json()["trajectory"]["id"] == second
    assert _claim(client).status_code == 204
    # claiming does not change the review status
    assert client.get(f"/v1/trajectories/{first}").json()["status"] == "pending"


def test_default_lease_is_900_seconds_and_bounds(app, client):
    ingest(client, "q-len")
    lease = _claim(client).json()["lease"]
    seconds = sql(app, "SELECT extract(epoch FROM expires_at - claimed_at) AS s FROM annotation_leases "
                       "WHERE id = :id", id=lease["lease_id"])[0].s
    assert float(seconds) == 900
    r = _claim(client, lease_seconds=3601)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "lease_seconds"


def test_claim_filters_and_only_pending(client):
    ingest(client, "q-f1", source="a", task_type="weather")  # the only one left for task_type=weather below
    b = ingest(client, "q-f2", source="b", task_type="weather")
    c = ingest(client, "q-f3", source="b", task_type="math")
    client.post(f"/v1/trajectories/{c}/review", json={"action": "start"})
    r = _claim(client, source="b")
    assert r.json()["trajectory"]["id"] == b
    assert _claim(client, source="b").status_code == 204  # c is in review, not pending
    assert _claim(client, format="react").status_code == 204
    assert _claim(client, task_type="weather").json()["trajectory"]["source"] == "a"
    assert client.post(CLAIM).status_code == 204  # no body: defaults


def test_expired_lease_puts_the_trajectory_back(app, client):
    tid = ingest(client, "q-exp")
    other = keyed_client(app, client, ["annotate"], "other")
    lease = _claim(client).json()["lease"]
    assert _claim(other).status_code == 204
    sql(app, "UPDATE annotation_leases SET expires_at = now() - interval '1 second' WHERE id = :id",
        id=lease["lease_id"])
    r = _claim(other)
    assert r.status_code == 200 and r.json()["trajectory"]["id"] == tid
    # the old lease is closed as expired; its holder can no longer act on it
    old = sql(app, "SELECT end_reason FROM annotation_leases WHERE id = :id", id=lease["lease_id"])[0]
    assert old.end_reason == "expired"
    for verb in ("release", "complete", "extend"):
        r = client.post(f"/v1/annotation-queue/{lease['lease_id']}/{verb}")
        assert r.status_code == 409 and r.json()["code"] == "lease_expired", (verb, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)


def test_expired_lease_without_a_new_claim_is_409(app, client):
    ingest(client, "q-exp2")
    lease = _claim(client).json()["lease"]
    sql(app, "UPDATE annotation_leases SET expires_at = now() - interval '1 second' WHERE id = :id",
        id=lease["lease_id"])
    r = client.post(f"/v1/annotation-queue/{lease['lease_id']}/extend")
    assert r.status_code == 409 and r.json()["code"] == "lease_expired" and r.json()["expires_at"]


def test_release_gives_it_back_and_complete_ends_it(client):
    tid = ingest(client, "q-rel")
    lease = _claim(client).json()["lease"]
    r = client.post(f"/v1/annotation-queue/{lease['lease_id']}/release")
    assert r.status_code == 200 and r.json()["end_reason"] == "released" and r.json()["ended_at"]
    r = client.post(f"/v1/annotation-queue/{lease['lease_id']}/release")
    assert r.status_code == 409 and r.json()["code"] == "lease_ended" and r.json()["end_reason"] == "released"
    again = _claim(client).json()
    assert again["trajectory"]["id"] == tid and again["lease"]["lease_id"] != lease["lease_id"]
    # the annotator's round: approve, then complete
    client.post(f"/v1/trajectories/{tid}/review", json={"action": "approve"})
    r = client.post(f"/v1/annotation-queue/{again['lease']['lease_id']}/complete")
    assert r.status_code == 200 and r.json()["end_reason"] == "completed"
    assert _claim(client).status_code == 204


def test_extend_moves_expiry(app, client):
    ingest(client, "q-ext")
    lease = _claim(client, lease_seconds=60).json()["lease"]
    r = client.post(f"/v1/annotation-queue/{lease['lease_id']}/extend", json={"lease_seconds": 3600})
    assert r.status_code == 200 and r.json()["expires_at"] > lease["expires_at"]
    assert client.post(f"/v1/annotation-queue/{lease['lease_id']}/extend",
                       json={"lease_seconds": 4000}).status_code == 422


def test_only_the_holder_may_release_complete_or_extend(app, client):
    ingest(client, "q-403")
    holder = keyed_client(app, client, ["annotate"], "holder")
    stranger = keyed_client(app, client, ["annotate"], "stranger")
    lease = _claim(holder).json()["lease"]
    for verb in ("release", "complete", "extend"):
        r = stranger.post(f"/v1/annotation-queue/{lease['lease_id']}/{verb}")
        assert r.status_code == 403 and r.json()["code"] == "not_lease_holder", verb
    r = client.post(f"/v1/annotation-queue/{lease['lease_id']}/complete")  # even an admin key is not the holder
    assert r.status_code == 403
    assert holder.post(f"/v1/annotation-queue/{lease['lease_id']}/complete").status_code == 200
    r = client.post(f"/v1/annotation-queue/{uuid.uuid4()}/release")
    assert r.status_code == 404 and r.json()["code"] == "lease_not_found"


def test_bulk_review_leaves_leased_trajectories_alone(client):
    tid = ingest(client, "q-bulk", source="bulk-src")
    _claim(client)
    r = client.post("/v1/trajectories/review/bulk",
                    json={"action": "approve", "filter": {"source": "bulk-src"}})
    assert r.json()["changed"] == 0 and r.json()["skipped_leased"] == 1
    assert client.get(f"/v1/trajectories/{tid}").json()["status"] == "pending"
