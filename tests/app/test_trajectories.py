"""Ingestion through HTTP: storage, canonical form, idempotency, batches, limits, listing."""

from __future__ import annotations

import uuid

from app.trajectories.schemas import BatchResult
from tests.app.payloads import REACT, openai, padded_openai

PROBLEM = "application/problem+json"


def test_create_and_read_back(client):
    r = client.post("/v1/trajectories", json=openai("a-1"))
    assert r.status_code == 201, r.text
    receipt = r.json()
    assert receipt["created"] is True and receipt["span_revision"] == 1 and receipt["n_spans"] > 0
    assert receipt["sanitized"] == 0  # nothing to replace (tests/trajectories/test_sanitize.py counts some)
    assert r.headers["location"] == f"/v1/trajectories/{receipt['id']}"

    r = client.get(f"/v1/trajectories/{receipt['id']}")
    assert r.status_code == 200
    body = r.json()
    assert r.headers["etag"] == '"1"'
    assert body["source"] == "support-agent" and body["tags"] == ["prod", "weather"]
    assert body["metadata"] == {"latency_ms": 812} and body["status"] == "pending"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert body["messages"][1]["text"] == "Weather in NYC? ☀️"
    assistant = body["messages"][2]
    assert "<tool_call>" in assistant["text"] and assistant["tool_calls"][0]["name"] == "get_weather"
    kinds = {(s["message"], s["kind"]) for s in body["spans"]}
    assert (2, "reason") in kinds and (2, "action") in kinds and (3, "observation") in kinds
    assert body["raw"] is None
    assert client.get(f"/v1/trajectories/{receipt['id']}?include_raw=true").json()["raw"] == openai("a-1")


def test_replay_same_content_returns_same_id(client):
    first = client.post("/v1/trajectories", json=openai("dup")).json()
    r = client.post("/v1/trajectories", json=openai("dup"))
    assert r.status_code == 200
    assert r.json()["id"] == first["id"] and r.json()["created"] is False
    assert r.json()["n_spans"] == first["n_spans"]


def test_same_external_id_different_content_is_409(client):
    client.post("/v1/trajectories", json=openai("dup2"))
    r = client.post("/v1/trajectories", json=openai("dup2", outcome="failure"))
    assert r.status_code == 409
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["code"] == "external_id_conflict" and r.json()["existing_id"]


def test_idempotency_key_replay_and_reuse(client):
    body = openai(None)
    body.pop("external_id")
    r1 = client.post("/v1/trajectories", json=body, headers={"Idempotency-Key": "k-1"})
    r2 = client.post("/v1/trajectories", json=body, headers={"Idempotency-Key": "k-1"})
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r1.json()["id"] == r2.json()["id"]
    r3 = client.post("/v1/trajectories", json={**body, "outcome": "failure"}, headers={"Idempotency-Key": "k-1"})
    assert r3.status_code == 409 and r3.json()["code"] == "idempotency_key_reused"
    # without a key and without an external_id every post is a new trajectory
    r4 = client.post("/v1/trajectories", json=body)
    assert r4.status_code == 201 and r4.json()["id"] != r1.json()["id"]


def test_react_format_is_normalized(client):
    r = client.post("/v1/trajectories", json=REACT)
    assert r.status_code == 201, r.text
    body = client.get(f"/v1/trajectories/{r.json()['id']}").json()
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and "assistant" in roles and "tool" in roles
    assert body["messages"][0]["text"] == REACT["task"]
    for s in body["spans"]:
        text = body["messages"][s["message"]]["text"]
        assert 0 <= s["start"] < s["end"] <= len(text)


def test_validation_errors_are_problems_with_fields(client):
    r = client.post("/v1/trajectories", json={"format": "openai", "source": "s", "messages": [{"role": "wizard"}]})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "invalid_trajectory" and body["errors"][0]["field"].startswith("messages[0]")

    r = client.post("/v1/trajectories", json={"format": "yaml", "source": "s"})
    assert r.status_code == 422 and any(e["field"] == "format" for e in r.json()["errors"])

    r = client.post("/v1/trajectories", json={**openai("x"), "surprise": 1})
    assert r.status_code == 422 and any(e["field"] == "surprise" for e in r.json()["errors"])

    r = client.post("/v1/trajectories", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_json"


def test_client_spans_are_validated(client):
    good = openai("spans-ok", spans=[{"message": 2, "start": 0, "end": 5, "kind": "reason"}])
    r = client.post("/v1/trajectories", json=good)
    assert r.status_code == 201, r.text
    assert r.json()["n_spans"] == 1
    stored = client.get(f"/v1/trajectories/{r.json()['id']}").json()["spans"]
    assert stored == [{"message": 2, "start": 0, "end": 5, "kind": "reason"}]

    bad = openai("spans-bad", spans=[{"message": 1, "start": 0, "end": 5, "kind": "action"}])
    r = client.post("/v1/trajectories", json=bad)
    assert r.status_code == 422 and r.json()["code"] == "invalid_spans"
    assert r.json()["errors"][0]["field"].startswith("spans[0]")


def test_limits_state_the_limit(client, app):
    settings = app.state.settings
    big = b"x" * (settings.max_request_bytes + 1)
    r = client.post("/v1/trajectories", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["limit"]["max"] == settings.max_request_bytes

    body = openai("many")
    body["messages"] = [{"role": "user", "content": "hi"}] * (settings.max_messages + 1)
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 422 and r.json()["code"] == "limit_exceeded"
    assert r.json()["limit"] == {"name": "messages", "max": settings.max_messages,
                                 "actual": settings.max_messages + 1}

    r = client.post("/v1/trajectories/batch", json={"items": [openai(str(i)) for i in range(1001)]})
    assert r.status_code == 422 and r.json()["limit"]["max"] == 1000
    assert client.get("/v1/trajectories").json()["items"] == []


def test_streamed_body_over_limit_is_413(client, app):
    limit = app.state.settings.max_request_bytes

    def chunks():
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536

    r = client.post("/v1/trajectories", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def test_batch_partial_success(client):
    items = [openai("b-0"), {"format": "openai", "source": "s", "messages": "nope"}, openai("b-2"), openai("b-0")]
    r = client.post("/v1/trajectories/batch", json={"items": items})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["created"], body["replayed"], body["failed"]) == (2, 1, 1)
    statuses = [i["status"] for i in body["items"]]
    assert statuses == [201, 422, 201, 200]
    assert body["items"][3]["id"] == body["items"][0]["id"]
    assert [i.get("sanitized") for i in body["items"]] == [0, None, 0, 0]
    assert body["items"][1]["error"]["code"] == "validation_error"
    assert body["items"][1]["error"]["errors"][0]["field"] == "messages"
    # The route writes the answer itself: it is BatchResult's own JSON form, field for field.
    assert BatchResult.model_validate(body).model_dump(mode="json") == body
    page = client.get("/v1/trajectories").json()["items"]
    assert {p["external_id"] for p in page} == {"b-0", "b-2"}


def test_batch_idempotency_key(client):
    payload = {"items": [openai("bi-1"), openai("bi-2")]}
    r1 = client.post("/v1/trajectories/batch", json=payload, headers={"Idempotency-Key": "batch-1"})
    r2 = client.post("/v1/trajectories/batch", json=payload, headers={"Idempotency-Key": "batch-1"})
    assert r1.json() == r2.json() and r1.json()["created"] == 2
    r3 = client.post("/v1/trajectories/batch", json={"items": [openai("bi-3")]},
                     headers={"Idempotency-Key": "batch-1"})
    assert r3.status_code == 409


def test_list_filters_and_cursor(client):
    for i in range(7):
        body = padded_openai(f"l-{i}", 2000)
        body["task_type"] = "even" if i % 2 == 0 else "odd"
        body["tags"] = ["t", f"i{i}"]
        assert client.post("/v1/trajectories", json=body).status_code == 201
    seen = []
    cursor = None
    while True:
        url = "/v1/trajectories?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).json()
        seen += [i["external_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"l-{i}" for i in range(7)) and len(seen) == 7
    evens = client.get("/v1/trajectories?task_type=even").json()["items"]
    assert {e["external_id"] for e in evens} == {"l-0", "l-2", "l-4", "l-6"}
    tagged = client.get("/v1/trajectories?tag=t&tag=i3").json()["items"]
    assert [t["external_id"] for t in tagged] == ["l-3"]
    assert client.get("/v1/trajectories?status=approved").json()["items"] == []
    assert len(client.get("/v1/trajectories?complexity_min=0").json()["items"]) == 7
    assert client.get("/v1/trajectories?complexity_min=1e9").json()["items"] == []
    assert client.get("/v1/trajectories?created_after=2100-01-01T00:00:00Z").json()["items"] == []
    r = client.get("/v1/trajectories?cursor=garbage!")
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    assert client.get("/v1/trajectories?limit=1001").status_code == 422


def test_export_in_own_format_and_original(client):
    tid = client.post("/v1/trajectories", json=openai("exp")).json()["id"]
    exported = client.get(f"/v1/trajectories/{tid}/export").json()
    assert exported["format"] == "openai" and exported["messages"]
    again = client.post("/v1/trajectories", json={**exported, "external_id": "exp-again"}).json()
    a = client.get(f"/v1/trajectories/{tid}").json()
    b = client.get(f"/v1/trajectories/{again['id']}").json()
    assert [m["text"] for m in a["messages"]] == [m["text"] for m in b["messages"]]
    assert a["content_sha256"] == b["content_sha256"]
    assert client.get(f"/v1/trajectories/{tid}/export?original=true").json() == openai("exp")


def test_delete_and_not_found(client):
    tid = client.post("/v1/trajectories", json=openai("del")).json()["id"]
    assert client.delete(f"/v1/trajectories/{tid}").status_code == 204
    r = client.get(f"/v1/trajectories/{tid}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.delete(f"/v1/trajectories/{uuid.uuid4()}").status_code == 404
    assert client.get("/v1/trajectories/not-a-uuid").status_code == 422
