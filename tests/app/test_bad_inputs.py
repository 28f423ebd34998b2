"""Every bad input is a 4xx (issue #13, findings 2 and 3): what Postgres or the JSON serializer
cannot store is answered 422 with the field path before the database sees it, and a batch keeps
per-item results for all of these."""

from __future__ import annotations

import uuid

import pytest

from tests.app.payloads import openai

NUL = "a\x00b"
DEEP = 300  # deeper than the serializer's limit (254) and within the parser's (1024)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _call_args(arguments: str) -> dict:
    body = openai("args")
    body["messages"][2]["tool_calls"][0]["function"]["arguments"] = arguments
    return body


BAD_ITEMS = {
    "nul_source": (openai("x", source=NUL), "source"),
    "nul_external_id": (openai(NUL), "external_id"),
    "nul_teacher": (openai("x", teacher_model=NUL), "teacher_model"),
    "nul_task_type": (openai("x", task_type=NUL), "task_type"),
    "nul_tag": (openai("x", tags=["ok", NUL]), "tags[1]"),
    "nul_metadata_key": (openai("x", metadata={NUL: 1}), "metadata"),
    "nul_metadata_value": (openai("x", metadata={"k": [NUL]}), "metadata.k[0]"),
    "nul_tool_definition": (openai("x", tools=[{"type": "function", "function": {"name": NUL}}]),
                            "tools[0].function.name"),
    "deep_metadata": (openai("x", metadata={"k": _nested(DEEP)}), "metadata.k"),
    "deep_tools": (openai("x", tools=[_nested(DEEP)]), "tools[0]"),
    "deep_arguments": (_call_args("[" * DEEP + "]" * DEEP), "messages[2].tool_calls[0].function.arguments"),
    "huge_int_arguments": (_call_args('{"n": 123456789012345678901234567890}'),
                           "messages[2].tool_calls[0].function.arguments"),
    "huge_tag": (openai("x", tags=["t" * 1_000_000]), "tags[0]"),
    "wide_source_and_id": (openai("🦊" * 500, source="🦊" * 200), "external_id"),
}


@pytest.mark.parametrize("name", sorted(BAD_ITEMS))
def test_single_post_bad_input_is_422_with_field(client, name):
    body, field = BAD_ITEMS[name]
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 422, r.text[:500]
    assert r.headers["content-type"].startswith("application/problem+json")
    fields = [e["field"] for e in r.json()["errors"]]
    assert any(f == field or f.startswith(field) for f in fields), fields


def test_batch_keeps_per_item_results_for_every_bad_input(client):
    names = sorted(BAD_ITEMS)
    items = []
    for i, name in enumerate(names):
        body = dict(BAD_ITEMS[name][0])
        items.append(body)
        items.append(openai(f"good-{i}"))
    r = client.post("/v1/trajectories/batch", json={"items": items})
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["failed"] == len(names) and body["created"] == len(names)
    for i, name in enumerate(names):
        bad, good = body["items"][2 * i], body["items"][2 * i + 1]
        assert bad["status"] == 422, (name, bad)
        fields = [e["field"] for e in bad["error"]["errors"]]
        assert any(f.startswith(BAD_ITEMS[name][1]) for f in fields), (name, fields)
        assert good["status"] == 201


def _raw_post(client, path: str, raw: bytes):  # type: ignore[no-untyped-def]
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def test_lone_surrogate_and_huge_numbers_in_a_batch_item_fail_that_item_only(client):
    good = orjson_dumps(openai("fine"))
    surrogate = orjson_dumps(openai("sur")).replace(b'"Weather in NYC?"', b'"Weather \\ud800 NYC?"', 1)
    big = orjson_dumps(openai("big")).replace(b'"reward":1.0', b'"reward":1e400', 1)
    raw = b'{"items": [' + b", ".join([surrogate, good, big]) + b"]}"
    r = _raw_post(client, "/v1/trajectories/batch", raw)
    assert r.status_code == 200, r.text[:500]
    statuses = [i["status"] for i in r.json()["items"]]
    assert statuses == [422, 201, 422]
    assert r.json()["items"][0]["error"]["errors"][0]["field"] == "task"
    assert r.json()["items"][2]["error"]["errors"][0]["field"] == "reward"


def test_a_number_over_4300_digits_is_a_422(client):
    raw = orjson_dumps(openai("digits", metadata={}))
    raw = raw.replace(b'"metadata":{}', b'"metadata":{"n":' + b"9" * 5000 + b"}")
    r = _raw_post(client, "/v1/trajectories", raw)
    assert r.status_code == 422, r.text[:300]
    r = _raw_post(client, "/v1/datasets", b'{"name": "d", "max_per_task": ' + b"9" * 5000 + b"}")
    assert r.status_code == 422, r.text[:300]


def orjson_dumps(value: object) -> bytes:
    import orjson

    return orjson.dumps(value)


QUERY_CASES = [
    "/v1/trajectories?source=a%00b",
    "/v1/trajectories?tag=a%00b",
    "/v1/trajectories?teacher_model=%00",
    "/v1/datasets?name=x%00",
    "/v1/jobs?kind=%00",
    "/v1/stats/annotation?source=%00",
    "/v1/jobs/{job}/metrics?after_step=2147483648",
    "/v1/jobs/{job}/events?cursor=99999999999999999999",
    "/v1/jobs/{job}/events?cursor=%C2%B2",
    "/v1/trajectories/{tid}/revisions?cursor=2147483648",
    "/v1/trajectories/{tid}/revisions?cursor=%C2%B2",
    "/v1/trajectories/{tid}/revisions/2147483648",
    "/v1/trajectories/{tid}/revisions/diff?to=2147483648",
    "/v1/trajectories/{tid}/render?revision=2147483648",
    "/v1/datasets/{ds}/items?cursor=2147483648",
    "/v1/datasets/{ds}/items?cursor=%C2%B2",
]


@pytest.fixture
def ids(client):  # type: ignore[no-untyped-def]
    tid = client.post("/v1/trajectories", json=openai("ids")).json()["id"]
    client.post(f"/v1/trajectories/{tid}/review", json={"action": "approve"})
    ds = client.post("/v1/datasets", json={"name": "ids", "filter": {"source": "support-agent"}}).json()["id"]
    return {"tid": tid, "ds": ds, "job": str(uuid.uuid4())}


@pytest.mark.parametrize("url", QUERY_CASES)
def test_query_and_path_values_postgres_cannot_take_are_4xx(client, ids, url):
    r = client.get(url.format(**ids))
    assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])


@pytest.mark.parametrize("body", [
    {"name": "a\x00b"},
    {"name": "n", "description": "\x00"},
    {"name": "n", "filter": {"source": "\x00"}},
    {"name": "n", "filter": {"tags": ["\x00"]}},
    {"name": "n", "max_per_task": 2**31},
])
def test_dataset_bodies_postgres_cannot_take_are_422(client, body):
    r = client.post("/v1/datasets", json=body)
    assert r.status_code == 422, r.text[:300]
    assert r.json()["errors"]


def test_span_writes_with_nul_or_huge_revision_are_4xx(client, ids):
    tid = ids["tid"]
    client.post(f"/v1/trajectories/{tid}/review", json={"action": "reopen"})
    r = client.put(f"/v1/trajectories/{tid}/spans", json={"spans": [], "reason": "\x00"},
                   headers={"If-Match": '"1"'})
    assert r.status_code == 422, r.text[:300]
    for tag in ('"²"'.encode(), b'"99999999999999999999"'):
        r = client.put(f"/v1/trajectories/{tid}/spans", json={"spans": []}, headers={"If-Match": tag})
        assert 400 <= r.status_code < 500, (tag, r.status_code, r.text[:300])
    r = client.post(f"/v1/trajectories/{tid}/review", json={"action": "start", "note": "\x00"})
    assert r.status_code == 422, r.text[:300]


def test_key_names_postgres_cannot_take_are_422(client):
    r = client.post("/v1/keys", json={"name": "\x00", "scopes": ["ingest"]})
    assert r.status_code == 422, r.text[:300]


def test_non_latin1_dataset_name_exports(client, ids):
    client.post(f"/v1/trajectories/{ids['tid']}/review", json={"action": "reopen"})
    client.post(f"/v1/trajectories/{ids['tid']}/review", json={"action": "approve"})
    ds = client.post("/v1/datasets", json={"name": "données-🦊", "filter": {"source": "support-agent"}})
    assert ds.status_code == 201, ds.text
    r = client.get(f"/v1/datasets/{ds.json()['id']}/export")
    assert r.status_code == 200 and r.text.count("\n") == 1
    assert "filename*=UTF-8''" in r.headers["content-disposition"]


def test_overlong_artifact_path_and_model_name_are_4xx(client, ids):
    r = client.get(f"/v1/jobs/{ids['job']}/artifacts/" + "a" * 5000)
    assert r.status_code == 404
    r = client.post("/v1/jobs", json={"kind": "distill", "dataset_id": ids["ds"], "student_model": "m" * 5000})
    assert r.status_code == 422, r.text[:300]
