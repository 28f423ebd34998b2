"""The client's request bodies and error answers, over an in-memory transport: UTF-8 JSON with non-ASCII
characters kept as themselves, values JSON has no word for written as the client always wrote them, and
problem+json answers raised as ``DistilleryError``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from typing import Any

import httpx
import pytest

from distillery import DistilleryClient, DistilleryError


class Recorder:
    """An httpx transport handler that keeps every request and answers with ``reply``."""

    def __init__(self, reply: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply or httpx.Response(201, json={"id": "t1", "created": True})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply


def _client(recorder: Recorder) -> DistilleryClient:
    return DistilleryClient("http://api.test", key="dk_test", transport=httpx.MockTransport(recorder))


def test_body_is_utf8_json_with_non_ascii_kept() -> None:
    recorder = Recorder()
    text = "Größe: 21°C — 東京 😀"
    with _client(recorder) as api:
        assert api.ingest({"task": text, "tags": ["ü"]}, idempotency_key="k-1") == {"id": "t1", "created": True}
    (request,) = recorder.requests
    assert request.method == "POST" and request.url.path == "/v1/trajectories"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "k-1" and request.headers["authorization"] == "Bearer dk_test"
    assert request.content == '{"task":"Größe: 21°C — 東京 😀","tags":["ü"]}'.encode()
    assert b"\\u" not in request.content


class Outcome(enum.Enum):
    SUCCESS = "success"


@dataclasses.dataclass
class Meta:
    run: uuid.UUID
    outcome: Outcome


def test_values_json_lacks_are_written_as_before() -> None:
    """Datetimes in ISO 8601, UUIDs as strings, enums by value, dataclasses as objects; NaN and infinity,
    which JSON cannot carry, as null (what the client's former encoder, orjson, did)."""
    recorder = Recorder()
    run = uuid.UUID(int=7)
    body: dict[str, Any] = {
        "at": dt.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=dt.UTC), "day": dt.date(2024, 5, 6),
        "meta": Meta(run, Outcome.SUCCESS), "reward": float("nan"), "scores": (1.5, float("-inf")),
    }
    with _client(recorder) as api:
        api.ingest(body)
    assert json.loads(recorder.requests[0].content) == {
        "at": "2024-05-06T07:08:09.000010+00:00", "day": "2024-05-06",
        "meta": {"run": str(run), "outcome": "success"}, "reward": None, "scores": [1.5, None],
    }


def test_unencodable_text_is_refused_before_sending() -> None:
    recorder = Recorder()
    with _client(recorder) as api, pytest.raises(TypeError, match="UTF-8"):
        api.ingest({"task": "lone \ud800 surrogate"})
    with _client(recorder) as api, pytest.raises(TypeError, match="not JSON serializable"):
        api.ingest({"task": object()})
    assert recorder.requests == []


def test_problem_answers_raise_with_code_and_field_errors() -> None:
    problem = {"type": "about:blank", "status": 422, "code": "validation_failed", "detail": "bad request",
               "errors": [{"field": "messages[0].role", "code": "invalid", "message": "unknown role"}]}
    recorder = Recorder(httpx.Response(422, json=problem, headers={"content-type": "application/problem+json"}))
    with _client(recorder) as api, pytest.raises(DistilleryError) as caught:
        api.submit_job({"kind": "distill"})
    assert (caught.value.status, caught.value.code, caught.value.detail) == (422, "validation_failed", "bad request")
    assert caught.value.errors == problem["errors"]
    recorder.reply = httpx.Response(502, text="<html>bad gateway</html>")
    with _client(recorder) as api, pytest.raises(DistilleryError) as caught:
        api.get_job("j1")
    assert caught.value.code == "http_502" and "bad gateway" in caught.value.detail
