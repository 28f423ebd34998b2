"""`POST /v1/traces` over HTTP: JSON, protobuf and gzip bodies, OTLP answers with partial success, the
trace sent over several requests, the round trip through `GET /v1/traces/{id}`, and bad bodies."""

from __future__ import annotations

import gzip
import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.traces.otlp_builders import TRACE, agent_run, request, span, to_protobuf

PROTOBUF = "application/x-protobuf"
OTHER = "0af7651916cd43dd8448eb211c80319c"


def _post_json(client, body, **headers):  # type: ignore[no-untyped-def]
    return client.post("/v1/traces", content=json.dumps(body), headers={"Content-Type": "application/json",
                                                                          **headers})


def _stored(client, source="weather-agent"):  # type: ignore[no-untyped-def]
    items = client.get("/v1/trajectories", params={"source": source, "format": "otlp"}).json()["items"]
    return [client.get(f"/v1/trajectories/{i['id']}").json() for i in items]


def test_json_export_stores_one_trajectory_per_trace(client):
    body = request(agent_run() + agent_run(OTHER))
    r = _post_json(client, body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.json() == {}
    stored = _stored(client)
    assert sorted(t["external_id"] for t in stored) == sorted([TRACE, OTHER])
    t = stored[0]
    assert t["format"] == "otlp" and t["outcome"] == "success" and t["tags"] == ["prod", "weather"]
    assert [m["role"] for m in t["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert {(s["message"], s["kind"]) for s in t["spans"]} >= {(2, "reason"), (2, "action"), (3, "observation")}
    raw = client.get(f"/v1/trajectories/{t['id']}/export", params={"original": "true"}).json()
    assert len(raw["resourceSpans"][0]["scopeSpans"][0]["spans"]) == 4  # the trace's spans, as OTLP/JSON
    # an exporter's retry of the same request changes nothing
    assert _post_json(client, body).json() == {}
    assert [x["id"] for x in _stored(client)] == [x["id"] for x in stored]


def test_protobuf_and_gzip_bodies_answer_in_kind(client):
    data = to_protobuf(request(agent_run()))
    r = client.post("/v1/traces", content=gzip.compress(data),
                    headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
    (t,) = _stored(client)
    assert t["external_id"] == TRACE and t["teacher_model"] == "gpt-4o-2024-08-06"


def test_partial_success_counts_the_spans_of_refused_traces(client):
    plain = [span(OTHER, "a000000000000001", 1, {"http.route": "/health"}),
             span(OTHER, "a000000000000002", 2, {"http.route": "/health"}, parent="a000000000000001")]
    bad = agent_run("1" * 32)
    bad[-1]["attributes"].append({"key": "distillery.outcome", "value": {"stringValue": "great"}})
    r = _post_json(client, request(agent_run() + plain + bad))
    partial = r.json()["partialSuccess"]
    assert r.status_code == 200 and int(partial["rejectedSpans"]) == 2 + 4
    assert f"trace {OTHER}: no_genai_messages" in partial["errorMessage"]
    assert "trace " + "1" * 32 + ": validation_error" in partial["errorMessage"]
    assert [t["external_id"] for t in _stored(client)] == [TRACE]
    r = client.post("/v1/traces", content=to_protobuf(request(plain)), headers={"Content-Type": PROTOBUF})
    assert ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans == 2


def test_a_trace_sent_over_several_requests_is_extended(client):
    spans = agent_run()
    first, rest = spans[:1], spans[1:]  # the first LLM call ends first; the root span comes last
    assert _post_json(client, request(first)).json() == {}
    (early,) = _stored(client)
    assert [m["role"] for m in early["messages"]] == ["system", "user", "assistant"]
    assert early["metadata"]["otlp"]["complete"] is False and early["outcome"] == "unknown"
    assert _post_json(client, request(rest)).json() == {}
    (full,) = _stored(client)
    assert full["id"] == early["id"]  # replaced in place: a link to the early trajectory stays good
    assert client.get(f"/v1/trajectories/{early['id']}").json()["n_messages"] == 5
    assert [m["role"] for m in full["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert full["metadata"]["otlp"] == {"trace_id": TRACE, "spans": 4, "llm_spans": 2, "threads": 1,
                                        "complete": True}
    assert full["outcome"] == "success"
    # the same content in one request gives the same trajectory
    assert _post_json(client, request(spans)).json() == {} and [t["id"] for t in _stored(client)] == [full["id"]]


def test_a_reviewed_trajectory_is_not_changed_by_later_spans(client):
    spans = agent_run()
    _post_json(client, request(spans[:1]))
    (early,) = _stored(client)
    r = client.post(f"/v1/trajectories/{early['id']}/review", json={"action": "start"})
    assert r.status_code == 200, r.text
    r = _post_json(client, request(spans[1:]))
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 3 and "trace_already_reviewed" in partial["errorMessage"]
    assert "in_review" in partial["errorMessage"]
    (same,) = _stored(client)
    assert same["id"] == early["id"] and len(same["messages"]) == 3


def test_a_claimed_trajectory_is_not_replaced_under_its_annotator(client):
    spans = agent_run()
    _post_json(client, request(spans[:1]))
    claim = client.post("/v1/annotation-queue/claim", json={"source": "weather-agent"})
    assert claim.status_code == 200, claim.text
    r = _post_json(client, request(spans[1:]))
    assert "claimed by an annotator" in r.json()["partialSuccess"]["errorMessage"]
    (same,) = _stored(client)
    assert same["id"] == claim.json()["trajectory"]["id"] and len(same["messages"]) == 3


def test_export_as_trace_round_trips_under_another_source(client):
    _post_json(client, request(agent_run()))
    (t,) = _stored(client)
    trace = client.get(f"/v1/traces/{t['id']}").json()
    trace["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"] = "copy"
    assert _post_json(client, trace).json() == {}
    (copy_,) = _stored(client, "copy")
    assert copy_["content_sha256"] == t["content_sha256"] and copy_["spans"] == t["spans"]
    assert (copy_["outcome"], copy_["tags"], copy_["task"]) == (t["outcome"], t["tags"], t["task"])
    # and the trajectory export in its own format re-ingests through /v1/trajectories
    body = client.get(f"/v1/trajectories/{t['id']}/export").json()
    r = client.post("/v1/trajectories", json={**body, "source": "copy-2"})
    assert r.status_code == 201, r.text
    assert r.json()["content_sha256"] == t["content_sha256"]
    assert client.get(f"/v1/trajectories/{r.json()['id']}").json()["spans"] == t["spans"]


def test_any_trajectory_exports_as_a_trace(client):
    r = client.post("/v1/trajectories", json={
        "format": "openai", "source": "chat", "external_id": "o-1", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "assistant", "content": "done"}]})
    original = r.json()
    trace = client.get(f"/v1/traces/{original['id']}").json()
    trace["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"] = "chat-copy"
    assert _post_json(client, trace).json() == {}
    (copy_,) = _stored(client, "chat-copy")
    assert copy_["content_sha256"] == original["content_sha256"] and copy_["external_id"] == "o-1"


def test_bad_bodies_are_4xx_problems(client):
    for content, headers, status, code in [
        (b"{not json", {"Content-Type": "application/json"}, 400, "invalid_otlp"),
        (b"\x0a\xff\xff", {"Content-Type": PROTOBUF}, 400, "invalid_otlp"),
        (b"not gzip", {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}, 400, "invalid_otlp"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415,
         "unsupported_content_encoding"),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "1"}]}]}]}).encode(),
         {"Content-Type": "application/json"}, 400, "invalid_otlp"),
    ]:
        r = client.post("/v1/traces", content=content, headers=headers)
        assert (r.status_code, r.json()["code"]) == (status, code), (content, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


def test_gzip_bomb_is_413(client, settings):
    bomb = gzip.compress(b"\n" * (settings.max_request_bytes + 10))
    r = client.post("/v1/traces", content=bomb, headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def test_ingest_scope_and_bound_sources(client):
    key = client.post("/v1/keys", json={"name": "agent", "scopes": ["ingest"], "sources": ["other"]}).json()["key"]
    r = client.post("/v1/traces", content=json.dumps(request(agent_run())),
                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and "source_not_allowed" in r.json()["partialSuccess"]["errorMessage"]
    r = client.post("/v1/traces", content=b"{}", headers={"Content-Type": "application/json",
                                                          "Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_nul_in_tool_output_is_sanitized_not_refused(client):
    """A NUL escaped in the message JSON (as instrumentations write tool output that holds one)."""
    for trace, content_type in ((TRACE, "application/json"), (OTHER, PROTOBUF)):
        text = json.dumps(request(agent_run(trace))).replace("rainy, 12", "rainy\\\\u0000 12")
        body = text.encode() if content_type != PROTOBUF else to_protobuf(json.loads(text))
        r = client.post("/v1/traces", content=body, headers={"Content-Type": content_type})
        assert r.status_code == 200 and r.content in (b"{}", b""), r.content
    stored = _stored(client)
    assert len(stored) == 2
    for t in stored:
        assert t["messages"][3]["text"] == "rainy\ufffd 12°C" and len(t["messages"]) == 5


def test_protobuf_body_of_tiny_values_is_413_before_it_is_expanded(client):
    message = ExportTraceServiceRequest()
    span_ = message.resource_spans.add().scope_spans.add().spans.add()
    span_.trace_id, span_.span_id = b"\x01" * 16, b"\x02" * 8
    for _ in range(300_000):  # 5 bytes each on the wire, two Python objects each once decoded
        span_.attributes.add().key = "k"
    r = client.post("/v1/traces", content=message.SerializeToString(), headers={"Content-Type": PROTOBUF})
    assert r.status_code == 413 and r.json()["code"] == "too_many_values"
