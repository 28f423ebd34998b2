"""Review workflow: transitions, history, editing rules, If-Match on approval, bulk review."""

from __future__ import annotations

import uuid

from tests.annotations.helpers import AUTO, PROBLEM, edit, ingest, keyed_client, put_spans, sql


def _review(client, tid, action, note=None, **headers):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/trajectories/{tid}/review", json={"action": action, "note": note}, headers=headers)


def test_start_approve_reopen_reject_and_history(app, client):
    annotator = keyed_client(app, client, ["annotate"], "ann")
    tid = ingest(client, "r-flow")
    r = _review(annotator, tid, "start")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["previous_status"], body["status"]) == ("pending", "in_review")
    assert body["allowed_actions"] == ["approve", "reject"] and body["reviewed_at"]
    key_id = body["reviewer_key_id"]
    assert key_id != "bootstrap-admin"

    assert edit(annotator, tid, [{"op": "delete", "index": 2}]).status_code == 200
    r = _review(annotator, tid, "approve", "looks right")
    assert r.json()["status"] == "approved" and r.json()["review_note"] == "looks right"
    assert r.json()["span_revision"] == 2 and r.json()["allowed_actions"] == ["reopen"]
    assert client.get(f"/v1/trajectories/{tid}").json()["status"] == "approved"

    assert _review(client, tid, "reopen", "one more look").json()["status"] == "in_review"
    assert _review(client, tid, "reject", "bad run").json()["status"] == "rejected"

    events = client.get(f"/v1/trajectories/{tid}/reviews").json()["items"]
    assert [(e["action"], e["from_status"], e["to_status"]) for e in events] == [
        ("start", "pending", "in_review"), ("approve", "in_review", "approved"),
        ("reopen", "approved", "in_review"), ("reject", "in_review", "rejected")]
    assert [e["actor_key_id"] for e in events] == [key_id, key_id, "bootstrap-admin", "bootstrap-admin"]
    assert events[1]["note"] == "looks right" and events[1]["span_revision"] == 2 and not events[1]["bulk"]
    row = sql(app, "SELECT reviewer_key_id, review_note, reviewed_at FROM trajectories WHERE id = :id", id=tid)[0]
    assert row.reviewer_key_id == "bootstrap-admin" and row.review_note == "bad run" and row.reviewed_at


def test_invalid_transitions_are_409_with_allowed_actions(client):
    tid = ingest(client, "r-409")
    r = _review(client, tid, "reopen")
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "invalid_transition" and body["status"] == 409 and body["current_status"] == "pending"
    assert body["allowed_actions"] == ["approve", "reject", "start"]
    _review(client, tid, "start")
    r = _review(client, tid, "start")
    assert r.status_code == 409 and r.json()["allowed_actions"] == ["approve", "reject"]
    _review(client, tid, "approve")
    for action in ("start", "approve", "reject"):
        r = _review(client, tid, action)
        assert r.status_code == 409 and r.json()["status"] == 409 and r.json()["current_status"] == "approved"
        assert r.json()["allowed_actions"] == ["reopen"]
    assert len(client.get(f"/v1/trajectories/{tid}/reviews").json()["items"]) == 2
    assert _review(client, tid, "publish").status_code == 422
    assert _review(client, str(uuid.uuid4()), "start").status_code == 404


def test_approved_trajectories_are_not_editable_until_reopened(client):
    tid = ingest(client, "r-locked")
    _review(client, tid, "approve")
    r = put_spans(client, tid, AUTO[:1])
    assert r.status_code == 409 and r.json()["code"] == "not_editable" and r.json()["status"] == 409
    assert r.json()["current_status"] == "approved"
    assert edit(client, tid, [{"op": "delete", "index": 0}]).json()["code"] == "not_editable"
    _review(client, tid, "reopen")
    assert put_spans(client, tid, AUTO[:1]).status_code == 200


def test_approval_with_if_match_refuses_a_stale_revision(client):
    tid = ingest(client, "r-etag")
    put_spans(client, tid, AUTO[:3])
    r = _review(client, tid, "approve", **{"If-Match": '"1"'})
    assert r.status_code == 412 and r.json()["current_revision"] == 2
    assert client.get(f"/v1/trajectories/{tid}").json()["status"] == "pending"
    assert _review(client, tid, "approve", **{"If-Match": '"2"'}).status_code == 200


def test_review_needs_annotate(app, client):
    tid = ingest(client, "r-scope")
    curator = keyed_client(app, client, ["curate"], "cur")
    r = _review(curator, tid, "start")
    assert r.status_code == 403 and r.json()["code"] == "missing_scope"


def _bulk(client, action="approve", dry_run=False, note="segmenter is fine here", **flt):  # type: ignore[no-untyped-def]
    return client.post("/v1/trajectories/review/bulk",
                       json={"action": action, "filter": flt, "note": note, "dry_run": dry_run})


def test_bulk_approve_dry_run_then_real_respects_the_filter(app, client):
    a1 = ingest(client, "b-1", source="trusted", tags=["prod", "x"])
    a2 = ingest(client, "b-2", source="trusted", tags=["prod"])
    a3 = ingest(client, "b-3", source="trusted", tags=["prod"])
    a4 = ingest(client, "b-4", source="trusted", tags=["prod"])
    other = ingest(client, "b-5", source="other", tags=["prod"])
    untagged = ingest(client, "b-6", source="trusted", tags=[])
    _review(client, a2, "start")
    _review(client, a3, "reject")   # not reviewable by bulk
    sql(app, "INSERT INTO annotation_leases (id, trajectory_id, holder_key_id, expires_at) "
             "VALUES (gen_random_uuid(), :t, 'someone', now() + interval '10 minutes')", t=a4)

    r = _bulk(client, dry_run=True, source="trusted", tags=["prod"])
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": True, "matched": 3, "changed": 0, "skipped_leased": 1, "would_change": 2}
    assert client.get(f"/v1/trajectories/{a1}").json()["status"] == "pending"

    r = _bulk(client, source="trusted", tags=["prod"])
    assert r.json() == {"dry_run": False, "matched": 3, "changed": 2, "skipped_leased": 1, "would_change": 2}
    status = {t: client.get(f"/v1/trajectories/{t}").json()["status"] for t in (a1, a2, a3, a4, other, untagged)}
    assert status == {a1: "approved", a2: "approved", a3: "rejected", a4: "pending", other: "pending",
                      untagged: "pending"}
    events = client.get(f"/v1/trajectories/{a2}/reviews").json()["items"]
    assert [(e["action"], e["from_status"], e["to_status"], e["bulk"]) for e in events] == [
        ("start", "pending", "in_review", False), ("approve", "in_review", "approved", True)]
    assert events[1]["note"] == "segmenter is fine here"
    # nothing left to change
    assert _bulk(client, source="trusted", tags=["prod"]).json()["changed"] == 0


def test_bulk_status_filter_and_reject(client):
    p = ingest(client, "bs-1", source="s2")
    q = ingest(client, "bs-2", source="s2")
    _review(client, q, "start")
    r = _bulk(client, action="reject", source="s2", status="in_review")
    assert r.json()["matched"] == 1 and r.json()["changed"] == 1
    assert client.get(f"/v1/trajectories/{q}").json()["status"] == "rejected"
    assert client.get(f"/v1/trajectories/{p}").json()["status"] == "pending"


def test_bulk_validation_and_scope(app, client):
    r = _bulk(client)
    assert r.status_code == 422 and r.json()["code"] == "filter_required"
    r = _bulk(client, status="pending")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "filter"
    r = _bulk(client, source="x", status="approved")
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("filter.status")
    r = _bulk(client, action="reopen", source="x")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "action"
    annotator = keyed_client(app, client, ["annotate"], "ann")
    r = _bulk(annotator, source="x")
    assert r.status_code == 403 and r.json()["required_scope"] == "curate"
