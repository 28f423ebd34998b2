"""Retries: which calls are tried again, for how long, with which ``Idempotency-Key``; against a real server
that rate-limits (429 + Retry-After), loses an answer after storing it, or is not up yet."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx
import pytest

from distillery import Distillery, DistilleryError, Retry
from distillery.transport import retry_after
from tests.app.payloads import openai
from tests.client.conftest import Server
from tests.conftest import truncate_all


class Script:
    """An httpx handler answering from a script of responses or exceptions, keeping every request."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def _client(script: Script, **retry: Any) -> tuple[Distillery, list[tuple[int, float, str]]]:
    waits: list[tuple[int, float, str]] = []
    policy = Retry(**{"backoff": 0.001, "max_backoff": 0.002, "on_retry": lambda *a: waits.append(a), **retry})
    return Distillery("http://api.test", key="k", transport=httpx.MockTransport(script), retry=policy,
                      spool=False), waits


def _ok(body: dict[str, Any] | None = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body or {"id": "x", "status": "queued", "items": []})


def test_reads_are_retried_on_connection_errors_and_5xx_then_succeed() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.ReadError("reset"), httpx.Response(502), _ok())
    api, waits = _client(script)
    assert api.get_job("j1")["id"] == "x"
    assert len(script.requests) == 4 and [w[0] for w in waits] == [1, 2, 3]
    assert "ConnectError" in waits[0][2] and waits[2][2] == "HTTP 502"


def test_attempts_are_bounded_and_the_last_answer_is_raised() -> None:
    script = Script(httpx.Response(503, json={"code": "database_unavailable", "detail": "down"}))
    api, _ = _client(script, attempts=3)
    with pytest.raises(DistilleryError) as caught:
        api.get_job("j1")
    assert caught.value.code == "database_unavailable" and len(script.requests) == 3
    script = Script(httpx.ConnectError("refused"))
    api, _ = _client(script, attempts=2)
    with pytest.raises(httpx.ConnectError):
        api.get_job("j1")
    assert len(script.requests) == 2


def test_client_errors_are_never_retried() -> None:
    for status in (400, 401, 404, 409, 422):
        script = Script(httpx.Response(status, json={"code": "nope"}))
        api, _ = _client(script)
        with pytest.raises(DistilleryError):
            api.submit_job({"kind": "distill"})
        assert len(script.requests) == 1, status


def test_a_creating_post_keeps_one_idempotency_key_across_its_retries() -> None:
    script = Script(httpx.ReadTimeout("lost"), httpx.Response(500), _ok(status=202))
    api, _ = _client(script)
    api.submit_job({"kind": "distill"})
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(script.requests) == 3 and len(keys) == 1
    api.submit_job({"kind": "distill"})  # the next logical call gets its own key
    assert script.requests[-1].headers["idempotency-key"] not in keys
    api.submit_job({"kind": "distill"}, idempotency_key="mine")
    assert script.requests[-1].headers["idempotency-key"] == "mine"


def test_calls_the_server_does_not_deduplicate_are_repeated_only_when_nothing_happened() -> None:
    """Creating a dataset carries a key, but the server does not deduplicate it: after a lost answer or a
    500 it is not sent again (it may have been created); a refused connection, 429 or 503 is safe."""
    for failure in (httpx.ReadTimeout("lost"), httpx.Response(500)):
        script = Script(failure, _ok(status=201))
        api, _ = _client(script)
        with pytest.raises((httpx.ReadTimeout, DistilleryError)):
            api.create_dataset("d")
        assert len(script.requests) == 1
    script = Script(httpx.ConnectError("refused"), httpx.Response(429, headers={"Retry-After": "0"}),
                    httpx.Response(503), _ok(status=201))
    api, _ = _client(script)
    api.create_dataset("d")
    assert len(script.requests) == 4 and len({r.headers["idempotency-key"] for r in script.requests}) == 1


def test_retry_after_is_honoured_in_seconds_and_as_a_date() -> None:
    assert retry_after("7") == 7.0 and retry_after(" 2.5 ") == 2.5 and retry_after("-3") == 0.0
    now = time.time()
    assert retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None
    policy = Retry(backoff=0.001, max_backoff=0.001, max_retry_after=60)
    assert policy.delay(1, httpx.Response(429, headers={"Retry-After": "5"})) == 5.0  # never earlier than asked
    assert policy.delay(1, httpx.Response(429, headers={"Retry-After": "61"})) is None  # too far: give up
    assert policy.delay(5, httpx.Response(429)) is None  # out of attempts
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}))
    api, _ = _client(script)
    with pytest.raises(DistilleryError) as caught:
        api.get_job("j1")
    assert caught.value.status == 429 and len(script.requests) == 1


def test_backoff_grows_exponentially_and_is_jittered() -> None:
    plain = Retry(backoff=0.5, max_backoff=3.0, jitter=False)
    assert [plain.backoff_delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = Retry(backoff=0.5, max_backoff=3.0)
    draws = [jittered.backoff_delay(3) for _ in range(200)]
    assert all(0 <= d <= 2.0 for d in draws) and len(set(draws)) > 100


# -- against the real server ---------------------------------------------------------------------------------


@pytest.fixture
def limited_server(database, settings) -> Any:  # type: ignore[no-untyped-def]
    """The API with a rate limit of one request a second (burst 1): the second request is a real 429."""
    from app.main import create_app

    strict = settings.model_copy(update={"rate_limit_per_second": 1.0, "rate_limit_burst": 1})
    server = Server(create_app(strict, database=database, migrate=False))
    server.start()
    yield server
    server.stop()
    truncate_all(database.engine)


def test_a_rate_limited_call_waits_as_told_and_then_succeeds(limited_server: Server) -> None:
    waits: list[tuple[int, float, str]] = []
    with Distillery(limited_server.url, key=limited_server.key, spool=False,
                    retry=Retry(backoff=0.01, on_retry=lambda *a: waits.append(a))) as api:
        first = api.ingest(openai("rl-1", source="retries"))
        second = api.ingest(openai("rl-2", source="retries"))  # over the limit: 429, Retry-After: 1
    assert first["created"] and second["created"]
    assert waits and waits[0][2] == "HTTP 429" and waits[0][1] >= 1.0


class LoseAnswers(httpx.BaseTransport):
    """Forwards to the real server, then drops the first ``n`` answers (the server did the work)."""

    def __init__(self, n: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.n = n
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        self.keys.append(request.headers.get("idempotency-key", ""))
        if self.n > 0:
            self.n -= 1
            raise httpx.ReadError("connection reset after the server answered")
        return response


def test_a_lost_answer_is_retried_without_storing_twice(server: Server) -> None:
    """No external_id here: only the Idempotency-Key, kept across the retries, prevents a duplicate."""
    single, batch = LoseAnswers(2), LoseAnswers(1)
    with Distillery(server.url, key=server.key, transport=single, spool=False, retry=Retry(backoff=0.01)) as api:
        receipt = api.ingest(anonymous("lost-1"))
    with Distillery(server.url, key=server.key, transport=batch, spool=False, retry=Retry(backoff=0.01)) as api:
        answer = api.ingest_batch([anonymous("lost-2")])
    assert len(single.keys) == 3 and len(set(single.keys)) == 1  # one logical call, one key
    assert receipt["created"] is False  # the server's replay of what it stored on the first try
    assert len(batch.keys) == 2 and answer["items"][0]["status"] == 201  # a batch replays its stored answer
    assert len(stored(server, "retries")) == 2


def anonymous(task: str) -> dict[str, Any]:
    body = openai(source="retries", task=task)
    del body["external_id"]
    return body


def stored(server: Server, source: str) -> list[dict[str, Any]]:
    """The trajectories the server holds for ``source``, read with plain httpx."""
    r = httpx.get(f"{server.url}/v1/trajectories", params={"source": source, "limit": 1000},
                  headers={"Authorization": f"Bearer {server.key}"})
    r.raise_for_status()
    return r.json()["items"]  # type: ignore[no-any-return]


def test_a_server_that_comes_up_while_the_client_waits(down_server: Server) -> None:
    """Connection refused is retried; the server starts during the wait and the call goes through."""
    def start_once(tried: int, delay: float, why: str) -> None:
        if not down_server.running:
            down_server.start()

    with Distillery(down_server.url, key=down_server.key, spool=False,
                    retry=Retry(backoff=0.01, on_retry=start_once)) as api:
        assert api.ingest(openai("late-1", source="retries"))["created"]
