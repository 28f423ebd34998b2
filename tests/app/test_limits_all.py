"""Every explicit limit is enforced and answered with the limit in the body, never by truncation.

``test_trajectories.py`` covers the message count, batch items and the single-request byte limit; this file
covers the rest: characters per message and per trajectory, tags, spans on ingest, in a replacement and left
by an edit, and the batch route's own (larger) byte limit. Limits are lowered on the app's settings so the
bodies stay small.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.annotations.helpers import AUTO, edit, ingest, put_spans
from tests.app.payloads import openai

PROBLEM = "application/problem+json"


def limited(app: FastAPI, **limits: int) -> None:
    """Lower limits for this test's app only (the routes read the settings from the app's state)."""
    app.state.settings = app.state.settings.model_copy(update=limits)


def _refused(r: Any, name: str, limit: int, actual: int, field: str | None = None) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "limit_exceeded"
    assert body["limit"] == {"name": name, "max": limit, "actual": actual}
    if field is not None:
        assert [e["field"] for e in body["errors"]] == [field]


def _count(client: TestClient, source: str) -> int:
    return len(client.get(f"/v1/trajectories?source={source}").json()["items"])


def test_characters_per_message(app: FastAPI, client: TestClient) -> None:
    limited(app, max_message_chars=200)  # the longest other message (the tool call) has 99 characters
    body = openai("chars-1", source="limits")
    body["messages"][1]["content"] = "x" * 201  # message 1 is the user turn; its text is the content itself
    _refused(client.post("/v1/trajectories", json=body), "characters", 200, 201, "messages[1]")
    body["messages"][1]["content"] = "x" * 200
    assert client.post("/v1/trajectories", json=body).status_code == 201
    assert _count(client, "limits") == 1


def test_characters_per_trajectory(app: FastAPI, client: TestClient) -> None:
    body = openai("total-1", source="limits")
    total = len(body["messages"][0]["content"]) + len(body["messages"][1]["content"])
    limited(app, max_trajectory_chars=total + 10)  # each message fits; all of them together do not
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 422 and r.json()["limit"]["name"] == "characters", r.text
    assert r.json()["limit"]["max"] == total + 10 and r.json()["limit"]["actual"] > total + 10
    assert r.json()["errors"][0]["field"] == "messages"
    assert _count(client, "limits") == 0


def test_tags(app: FastAPI, client: TestClient) -> None:
    limited(app, max_tags=2)
    _refused(client.post("/v1/trajectories", json=openai("tags-1", tags=["a", "b", "c"])), "tags", 2, 3, "tags")
    assert client.post("/v1/trajectories", json=openai("tags-2", tags=["a", "b"])).status_code == 201


def test_spans_sent_on_ingest(app: FastAPI, client: TestClient) -> None:
    limited(app, max_spans=3)
    _refused(client.post("/v1/trajectories", json=openai("spans-1", spans=AUTO)), "spans", 3, 4, "spans")
    assert client.post("/v1/trajectories", json=openai("spans-2", spans=AUTO[:3])).status_code == 201


def test_spans_in_a_replacement(app: FastAPI, client: TestClient) -> None:
    tid = ingest(client, "replace-1")
    limited(app, max_spans=3)
    _refused(put_spans(client, tid, AUTO), "spans", 3, 4, "spans")
    assert client.get(f"/v1/trajectories/{tid}/spans").headers["etag"] == '"1"'  # nothing stored


def test_spans_left_by_an_edit(app: FastAPI, client: TestClient) -> None:
    tid = ingest(client, "edit-1")  # four automatic spans
    limited(app, max_spans=4)
    _refused(edit(client, tid, [{"op": "split", "index": 3, "at": 6}]), "spans", 4, 5)
    assert client.get(f"/v1/trajectories/{tid}/spans").headers["etag"] == '"1"'
    assert edit(client, tid, [{"op": "set_kind", "index": 3, "kind": "reason"}]).status_code == 200


def test_the_batch_route_has_its_own_byte_limit(database: Any, settings: Any) -> None:
    """A batch larger than the single-request limit but under the batch limit is read, not refused with 413.

    The byte limits are fixed when the app is built, so this test builds its own; its items are invalid (a
    format that does not exist), so nothing is stored and the answer is per item."""
    from app.main import create_app

    small = settings.model_copy(update={"max_request_bytes": 4096, "max_batch_request_bytes": 64 * 1024})
    items = [{"format": "nope", "source": "limits", "external_id": f"b-{i}", "task": "y" * 1000} for i in range(8)]
    with TestClient(create_app(small, database=database, migrate=False),
                    headers={"Authorization": client_auth(settings)}) as c:
        single = c.post("/v1/trajectories", json=items[0] | {"task": "y" * 5000})
        assert single.status_code == 413 and single.json()["limit"]["max"] == 4096
        r = c.post("/v1/trajectories/batch", json={"items": items})  # ≈ 8.5 KB: over 4 KiB, under 64 KiB
        assert r.status_code == 200, r.text
        assert r.json()["failed"] == 8 and all(i["status"] == 422 for i in r.json()["items"])
        huge = c.post("/v1/trajectories/batch", json={"items": items * 9})
        assert huge.status_code == 413 and huge.json()["limit"]["max"] == 64 * 1024


def client_auth(settings: Any) -> str:
    return f"Bearer {settings.admin_key.get_secret_value()}"
