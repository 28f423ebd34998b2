"""Issue #13, findings 5, 6, 7 and 9: keys bound to sources, bounded metric labels, per-key limits,
idempotency expiry, revocation by NOTIFY, a negative key cache, byte-exact originals, 415 for bodies
that are not JSON, no key material or payload text in logs."""

from __future__ import annotations

import logging
import time
import uuid

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.app.payloads import openai
from tests.conftest import ADMIN_KEY


def _key(client, **body) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/v1/keys", json={"name": "k", "scopes": ["ingest"], **body})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def _as(app, key: str) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


# ---- 5: ingest keys bound to sources ----------------------------------------------------------------------

def test_a_bound_key_writes_only_to_its_sources_and_learns_nothing_of_others(app, client):
    client.post("/v1/trajectories", json=openai("victim-1", source="other-agent"))
    agent = _as(app, _key(client, sources=["support-agent"]))
    assert agent.post("/v1/trajectories", json=openai("mine-1")).status_code == 201
    r = agent.post("/v1/trajectories", json=openai("victim-1", source="other-agent"))
    assert r.status_code == 403 and r.json()["code"] == "source_not_allowed"
    assert "existing_id" not in r.text and "id" not in r.json()
    r = agent.post("/v1/trajectories", json=openai("squat", source="other-agent"))  # cannot squat an id either
    assert r.status_code == 403
    items = [openai("mine-2"), openai("victim-1", source="other-agent")]
    r = agent.post("/v1/trajectories/batch", json={"items": items})
    assert [i["status"] for i in r.json()["items"]] == [201, 403]
    assert r.json()["items"][1]["id"] is None
    ids = {t["external_id"] for t in client.get("/v1/trajectories?source=other-agent").json()["items"]}
    assert ids == {"victim-1"}


def test_an_unbound_ingest_key_is_not_shown_the_id_of_a_clashing_trajectory(app, client):
    client.post("/v1/trajectories", json=openai("clash"))
    agent = _as(app, _key(client))
    r = agent.post("/v1/trajectories", json=openai("clash", outcome="failure"))
    assert r.status_code == 409 and "existing_id" not in r.json()
    assert "existing_id" in client.post("/v1/trajectories", json=openai("clash", outcome="failure")).json()


def test_sources_only_on_ingest_only_keys(client):
    r = client.post("/v1/keys", json={"name": "k", "scopes": ["ingest", "annotate"], "sources": ["a"]})
    assert r.status_code == 422
    r = client.post("/v1/keys", json={"name": "k", "scopes": ["ingest"], "sources": ["a"]})
    assert r.json()["sources"] == ["a"]


# ---- 6: metric labels ---------------------------------------------------------------------------------------

def test_metric_labels_are_route_templates_only(client):
    for _ in range(50):
        client.get(f"/nope/{uuid.uuid4()}")
        client.request("BREW", f"/v1/{uuid.uuid4()}/")
        client.get(f"/v1/trajectories/{uuid.uuid4()}/")
    text_ = client.get("/metrics").text
    routes = {line.split('route="')[1].split('"')[0] for line in text_.splitlines() if 'route="' in line}
    assert not any(r.startswith(("/nope", "/v1/trajectories/0", "/v1/trajectories/1")) for r in routes), routes
    assert all(r == "unmatched" or r.startswith("/") for r in routes)
    assert len(routes) < 60, sorted(routes)
    assert 'method="BREW"' not in text_


# ---- 7: limits, idempotency expiry --------------------------------------------------------------------------

def test_per_key_rate_limit_is_a_429_problem_with_retry_after(app, client):
    app.state.settings = app.state.settings.model_copy(update={"rate_limit_per_second": 1.0, "rate_limit_burst": 3})
    from app.limits import Limiter

    app.state.limiter = Limiter(app.state.settings)
    agent = _as(app, _key(client))
    codes = [agent.post("/v1/trajectories", json=openai(f"rl-{i}")).status_code for i in range(5)]
    assert codes[:3] == [201, 201, 201] and 429 in codes[3:]
    r = agent.post("/v1/trajectories", json=openai("rl-x"))
    assert r.status_code == 429 and r.headers["retry-after"].isdigit()
    assert r.headers["content-type"].startswith("application/problem+json") and r.json()["code"] == "rate_limited"
    assert client.get("/healthz").status_code == 200  # other keys are not affected
    assert client.post("/v1/trajectories", json=openai("rl-admin")).status_code == 201


def test_in_flight_limit_counts_until_the_response_is_done(app, settings):
    from app.errors import TooManyRequests
    from app.limits import Limiter

    limiter = Limiter(settings.model_copy(update={"max_in_flight_per_key": 2}))
    first, second = limiter.admit("k"), limiter.admit("k")
    with pytest.raises(TooManyRequests) as exc:
        limiter.admit("k")
    assert exc.value.headers == {"Retry-After": "1"}
    first()
    first()  # releasing twice frees one slot only
    limiter.admit("k")
    with pytest.raises(TooManyRequests):
        limiter.admit("k")
    second()


def test_idempotency_records_expire(app, client, database):
    body = openai("idem-exp")
    body.pop("external_id")
    r1 = client.post("/v1/trajectories", json=body, headers={"Idempotency-Key": "exp"})
    replay = client.post("/v1/trajectories", json=body, headers={"Idempotency-Key": "exp"})
    assert replay.json()["id"] == r1.json()["id"]
    factory = app.state.session_factory
    sessions = factory()
    session = next(sessions)
    session.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    r2 = client.post("/v1/trajectories", json={**body, "outcome": "failure"}, headers={"Idempotency-Key": "exp"})
    assert r2.status_code == 201 and r2.json()["id"] != r1.json()["id"]  # the key was free again
    from app import idempotency

    session.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    assert idempotency.purge(session, 86_400) == 1
    sessions.close()


def test_unknown_keys_are_refused_from_memory(app, client, database):
    app.state.settings = app.state.settings.model_copy(update={"auth_negative_cache_seconds": 60.0})
    statements = []

    from sqlalchemy import event

    def count(*args, **kwargs):  # type: ignore[no-untyped-def]
        statements.append(args[2])

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        bad = TestClient(app, headers={"Authorization": "Bearer dk_0123456789ab_not-a-real-secret"})
        assert bad.get("/v1/trajectories").status_code == 401
        first = len([s for s in statements if "api_keys" in s])
        for _ in range(20):
            assert bad.get("/v1/trajectories").status_code == 401
        other = TestClient(app, headers={"Authorization": "Bearer dk_0123456789ab_another-made-up-secret"})
        assert other.get("/v1/trajectories").status_code == 401  # same unknown prefix: no lookup either
        assert len([s for s in statements if "api_keys" in s]) == first == 1
    finally:
        event.remove(database.engine, "before_cursor_execute", count)


# ---- 9: revocation everywhere, exact originals, 415, hub ids, logs ------------------------------------------

def test_revocation_reaches_another_process_through_notify(committed_app, database, settings):
    from app.main import create_app

    long_cache = settings.model_copy(update={"auth_cache_seconds": 3600.0})
    admin = TestClient(committed_app, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    other = create_app(long_cache, database=database, migrate=False)  # a second API process
    with admin, TestClient(other) as second:
        key = admin.post("/v1/keys", json={"name": "agent", "scopes": ["ingest"]}).json()
        auth = {"Authorization": f"Bearer {key['key']}"}
        assert second.post("/v1/trajectories", json=openai("rev-1"), headers=auth).status_code == 201  # now cached
        deadline = time.monotonic() + 10
        while not other.state.listener.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert admin.delete(f"/v1/keys/{key['id']}").status_code == 200
        revoked = time.monotonic()
        deadline = revoked + 5  # far below the hour the key would otherwise stay cached
        while time.monotonic() < deadline:
            r = second.post("/v1/trajectories", json=openai("rev-2"), headers=auth)
            if r.status_code == 401:
                break
            time.sleep(0.02)
        print(f"revocation seen by the other process after {(time.monotonic() - revoked) * 1000:.0f} ms")
        assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"


def test_original_export_is_byte_exact(client):
    body = orjson.dumps(openai("exact")).replace(b'"latency_ms":812',
                                                 b'"latency_ms" : 8.120e2, "big": 18446744073709551615, "neg": -0.0,'
                                                 b' "dup": 1, "dup": 2')
    r = client.post("/v1/trajectories", content=b"  " + body + b"\n", headers={"content-type": "application/json"})
    assert r.status_code == 201, r.text
    exported = client.get(f"/v1/trajectories/{r.json()['id']}/export?original=true")
    assert exported.content == b"  " + body + b"\n"
    indented = orjson.dumps(openai("exact-b2"), option=orjson.OPT_INDENT_2)
    pretty = b'{ "items" : [\n  ' + orjson.dumps(openai("exact-b1")) + b" ,\n  " + indented + b"\n] }"
    r = client.post("/v1/trajectories/batch", content=pretty, headers={"content-type": "application/json"})
    ids = [i["id"] for i in r.json()["items"]]
    assert client.get(f"/v1/trajectories/{ids[1]}/export?original=true").content == indented
    compact = orjson.dumps({"items": [openai("exact-c1")]})
    r = client.post("/v1/trajectories/batch", content=compact, headers={"content-type": "application/json"})
    assert client.get(f"/v1/trajectories/{r.json()['items'][0]['id']}/export?original=true").content == orjson.dumps(
        openai("exact-c1"))


@pytest.mark.parametrize(("path", "content_type"), [
    ("/v1/trajectories", "text/plain"), ("/v1/trajectories/batch", "text/plain; charset=utf-8"),
    ("/v1/datasets", "application/x-www-form-urlencoded"), ("/v1/jobs", "text/plain"), ("/v1/keys", "text/csv"),
])
def test_bodies_that_are_not_json_are_415(client, path, content_type):
    r = client.post(path, content=orjson.dumps(openai("ct")), headers={"content-type": content_type})
    assert r.status_code == 415, r.text
    assert r.json()["code"] == "unsupported_media_type"


def test_hub_ids_are_validated_whole(client):
    from app.jobs.validation import resolve_model

    with pytest.raises(Exception) as exc:
        resolve_model("a/b\n", None, "student_model")
    assert getattr(exc.value, "status", None) == 422


def test_logs_hold_no_key_material_or_payload_text(app, client, caplog):
    marker = "PAYLOAD-MARKER-7f3a"
    created = client.post("/v1/keys", json={"name": "logged", "scopes": ["ingest"]}).json()
    from app.auth import hash_key

    secrets = [ADMIN_KEY, created["key"], hash_key(created["key"]), created["key"].split("_", 2)[2]]
    with caplog.at_level(logging.DEBUG):
        agent = _as(app, created["key"])
        agent.post("/v1/trajectories", json=openai("log-1", task=marker))
        agent.post("/v1/trajectories", json=openai("log-1", task=marker + "x"))  # 409
        agent.post("/v1/trajectories", json={"format": "openai", "source": marker, "messages": marker})
        agent.post("/v1/trajectories", content=marker.encode(), headers={"content-type": "application/json"})
        client.post("/v1/trajectories", json=openai("log-2", tags=[marker * 100]))
        client.post("/v1/keys", json={"name": marker + "\x00", "scopes": ["ingest"]})
        client.get(f"/v1/trajectories?source={marker}%00")
        TestClient(app, headers={"Authorization": f"Bearer dk_{marker}_x"}).get("/v1/trajectories")
        # a database error that is not the input's fault: a unique key clash on key creation
        from app.models import ApiKey

        app.state.session_factory  # noqa: B018
        import app.auth as auth

        original = auth.generate_key
        auth.generate_key = lambda: (created["prefix"], created["key"])  # type: ignore[assignment]
        try:
            r = client.post("/v1/keys", json={"name": "clash", "scopes": ["ingest"]})
        finally:
            auth.generate_key = original  # type: ignore[assignment]
        assert r.status_code == 500 and ApiKey
    server = [rec for rec in caplog.records if not rec.name.startswith("httpx")]  # the test client's own log
    logged = "\n".join(rec.getMessage() + " " + str(rec.__dict__) for rec in server)
    assert "database error" in logged  # the clash was logged...
    for secret in secrets:
        assert secret not in logged  # ...without the key, its hash or its secret part
    assert marker not in logged
