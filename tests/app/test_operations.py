"""Health, readiness, metrics, logs, OpenAPI."""

from __future__ import annotations

import json
import logging
import re

from tests.app.payloads import openai
from tests.conftest import ADMIN_KEY


def test_health_ready_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/v1/trajectories", json=openai("m-1"))
    text = client.get("/metrics").text
    assert 'distillery_trajectories_ingested_total{format="openai",result="created"}' in text
    assert "distillery_http_request_duration_seconds_bucket" in text
    assert 'route="/v1/trajectories"' in text


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert "/v1/trajectories" in schema["paths"] and "/v1/trajectories/batch" in schema["paths"]
    assert "TrajectoryCreate" in schema["components"]["schemas"]
    body = schema["paths"]["/v1/trajectories"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TrajectoryCreate"}
    page = client.get("/docs")
    assert page.status_code == 200
    # Offline: every script and stylesheet the page loads is served by the API itself, none from a CDN.
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset
    assert "https://" not in page.text.split("<script>")[0].replace("https://fastapi.tiangolo.com", "")


def test_json_logs_with_request_id_and_no_secret(client, caplog):
    from app.observability import JsonFormatter

    with caplog.at_level(logging.INFO, logger="distillery.access"):
        r = client.post("/v1/trajectories", json=openai("log-1"), headers={"X-Request-ID": "req-abc"})
    assert r.headers["x-request-id"] == "req-abc"
    records = [rec for rec in caplog.records if rec.name == "distillery.access"]
    assert records
    line = JsonFormatter().format(records[-1])
    parsed = json.loads(line)
    assert parsed["status"] == 201 and parsed["route"] == "/v1/trajectories"
    assert parsed["key_id"] == "bootstrap-admin"
    assert ADMIN_KEY not in line
    redacted = json.loads(JsonFormatter().format(logging.makeLogRecord({"msg": "x", "api_key": "secret"})))
    assert redacted["api_key"] == "[redacted]"
