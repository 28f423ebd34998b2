"""Sending one logical call: the request built once (body encoded, ``Idempotency-Key`` chosen), then
tried up to ``Retry.attempts`` times with exponential backoff and jitter, honouring ``Retry-After``.

What is retried depends on whether repeating the call is safe. A call is *repeatable* when the
server cannot act on it twice: reads, and the creating POSTs that carry an ``Idempotency-Key`` (the
server replays the stored answer). Repeatable calls are retried on any transport error and on 429,
500, 502, 503, 504. Other calls are retried only when the server provably did nothing: the
connection was never made, or the answer was 429 or 503.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from distillery.wire import DistilleryError, dumps, problem_of

log = logging.getLogger("distillery")

REPEATABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
REFUSED_STATUSES = frozenset({429, 503})  # the server did nothing: safe to repeat any call
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def new_idempotency_key() -> str:
    return f"dsty-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Call:
    """One logical request. ``content`` is encoded once, so every retry sends the same bytes and key."""

    method: str
    path: str
    content: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    repeatable: bool = True

    @classmethod
    def get(cls, path: str, **params: Any) -> Call:
        return cls("GET", path, params={k: v for k, v in params.items() if v is not None})

    @classmethod
    def post(cls, path: str, body: Any = None, *, repeatable: bool = False) -> Call:
        """A POST whose repetition the server does not deduplicate (``repeatable`` when it is harmless)."""
        content = dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else {}
        return cls("POST", path, content=content, headers=headers, repeatable=repeatable)

    @classmethod
    def create(cls, path: str, body: Any, idempotency_key: str | None = None) -> Call:
        """A POST that creates something: one ``Idempotency-Key`` (given, else new) for all its tries."""
        call = cls.post(path, body, repeatable=True)
        call.headers["Idempotency-Key"] = idempotency_key or new_idempotency_key()
        return call


@dataclass(frozen=True)
class Retry:
    """How often and how long to retry. ``attempts`` counts every try (1 = never retry)."""

    attempts: int = 5
    backoff: float = 0.5  # the first delay in seconds; doubled after each try
    max_backoff: float = 30.0
    jitter: bool = True  # full jitter: a uniform draw in [0, delay], so clients that failed together spread out
    max_retry_after: float = 120.0  # a longer Retry-After ends the retries (the server asks to come back later)
    on_retry: Callable[[int, float, str], None] | None = None  # (try that failed, seconds to wait, why)

    def backoff_delay(self, tried: int) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** (tried - 1))
        return random.uniform(0, delay) if self.jitter else delay

    def delay(self, tried: int, response: httpx.Response | None = None) -> float | None:
        """Seconds to wait after ``tried`` tries, or None to stop: never less than ``Retry-After``."""
        if tried >= self.attempts:
            return None
        wait = self.backoff_delay(tried)
        asked = retry_after(response.headers.get("Retry-After")) if response is not None else None
        if asked is not None:
            if asked > self.max_retry_after:
                return None
            wait = max(wait, asked)
        return wait


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _why(call: Call, tried: int, policy: Retry, exc: Exception | None, response: httpx.Response | None
         ) -> tuple[float, str] | None:
    """(seconds to wait, reason) when ``call`` should be tried again, else None."""
    if exc is not None:
        if not (call.repeatable or isinstance(exc, NEVER_SENT)):
            return None
        delay = policy.delay(tried)
        return None if delay is None else (delay, f"{type(exc).__name__}: {exc}")
    assert response is not None
    statuses = REPEATABLE_STATUSES if call.repeatable else REFUSED_STATUSES
    if response.status_code not in statuses:
        return None
    delay = policy.delay(tried, response)
    return None if delay is None else (delay, f"HTTP {response.status_code}")


def _note(call: Call, tried: int, policy: Retry, delay: float, reason: str) -> None:
    log.info("distillery: %s %s failed (%s); try %d of %d in %.2fs", call.method, call.path, reason, tried + 1,
             policy.attempts, delay)
    if policy.on_retry is not None:
        policy.on_retry(tried, delay, reason)


def check(response: httpx.Response) -> httpx.Response:
    """``response`` when 2xx; else its problem body raised as DistilleryError."""
    if not response.is_success:
        raise problem_of(response.status_code, response.content)
    return response


class SyncTransport:
    """The blocking sender: ``send`` for whole answers, ``stream`` for long bodies (retried until they open)."""

    def __init__(self, http: httpx.Client, retry: Retry) -> None:
        self.http = http
        self.retry = retry

    def _open(self, call: Call, stream: bool, timeout: Any) -> httpx.Response:
        tried = 0
        while True:
            tried += 1
            request = self.http.build_request(call.method, call.path, content=call.content, params=call.params,
                                              headers=call.headers, **({"timeout": timeout} if timeout else {}))
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                decision = _why(call, tried, self.retry, exc, None)
                if decision is None:
                    raise
            else:
                if response.is_success:
                    return response
                decision = _why(call, tried, self.retry, None, response)
                response.read()
                response.close()
                if decision is None:
                    return check(response)
            _note(call, tried, self.retry, *decision)
            time.sleep(decision[0])

    def send(self, call: Call) -> httpx.Response:
        return self._open(call, False, None)

    @contextmanager
    def stream(self, call: Call, timeout: Any = None) -> Iterator[httpx.Response]:
        response = self._open(call, True, timeout)
        try:
            yield response
        finally:
            response.close()


class AsyncTransport:
    """The asyncio sender: the same decisions as ``SyncTransport``, awaiting instead of blocking."""

    def __init__(self, http: httpx.AsyncClient, retry: Retry) -> None:
        self.http = http
        self.retry = retry

    async def _open(self, call: Call, stream: bool, timeout: Any) -> httpx.Response:
        tried = 0
        while True:
            tried += 1
            request = self.http.build_request(call.method, call.path, content=call.content, params=call.params,
                                              headers=call.headers, **({"timeout": timeout} if timeout else {}))
            try:
                response = await self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                decision = _why(call, tried, self.retry, exc, None)
                if decision is None:
                    raise
            else:
                if response.is_success:
                    return response
                decision = _why(call, tried, self.retry, None, response)
                await response.aread()
                await response.aclose()
                if decision is None:
                    return check(response)
            _note(call, tried, self.retry, *decision)
            await asyncio.sleep(decision[0])

    async def send(self, call: Call) -> httpx.Response:
        return await self._open(call, False, None)

    @asynccontextmanager
    async def stream(self, call: Call, timeout: Any = None) -> AsyncIterator[httpx.Response]:
        response = await self._open(call, True, timeout)
        try:
            yield response
        finally:
            await response.aclose()


__all__ = ["AsyncTransport", "Call", "DistilleryError", "Retry", "SyncTransport", "check", "retry_after"]
