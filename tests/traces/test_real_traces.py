"""Real traces from instrumentation libraries (tests/data/logs/otlp/traces, see the README there) posted to
`POST /v1/traces` as JSON and as protobuf: the trajectory is the one the gold file describes, both
encodings store the same content, and the trace exported back re-ingests to the same messages and spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.formats import canonical_sha256, parse
from tests.traces.otlp_builders import to_protobuf

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs" / "otlp"
TRACES = sorted((LOGS / "traces").glob("*.json"))


def _only(client, source):  # type: ignore[no-untyped-def]
    (item,) = client.get("/v1/trajectories", params={"source": source}).json()["items"]
    return client.get(f"/v1/trajectories/{item['id']}").json()


def _with_service(trace: dict, name: str) -> dict:
    for rs in trace["resourceSpans"]:
        for kv in rs["resource"]["attributes"]:
            if kv["key"] == "service.name":
                kv["value"] = {"stringValue": name}
    return trace


@pytest.mark.parametrize("path", TRACES, ids=[p.stem for p in TRACES])
def test_real_trace_ingests_as_its_gold_trajectory(client, path):
    gold = json.loads((LOGS / path.name).read_text())
    expected = parse("otlp", {k: gold["request"][k] for k in ("messages", "tools") if k in gold["request"]})
    trace = json.loads(path.read_text())

    r = client.post("/v1/traces", content=json.dumps(_with_service(trace, "as-json")),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {}, r.text
    as_json = _only(client, "as-json")
    assert as_json["content_sha256"] == canonical_sha256(expected.messages)
    assert as_json["external_id"] == gold["request"]["external_id"] and as_json["task"] == gold["request"]["task"]
    assert as_json["teacher_model"] == gold["request"]["teacher_model"]
    assert any(s["kind"] == "action" for s in as_json["spans"])

    r = client.post("/v1/traces", content=to_protobuf(_with_service(trace, "as-protobuf")),
                    headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200 and r.content == b""  # an empty ExportTraceServiceResponse: all accepted
    as_protobuf = _only(client, "as-protobuf")
    assert as_protobuf["content_sha256"] == as_json["content_sha256"] and as_protobuf["spans"] == as_json["spans"]

    exported = _with_service(client.get(f"/v1/traces/{as_json['id']}").json(), "round-trip")
    assert client.post("/v1/traces", json=exported).json() == {}
    again = _only(client, "round-trip")
    assert again["content_sha256"] == as_json["content_sha256"] and again["spans"] == as_json["spans"]
