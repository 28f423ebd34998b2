"""uvicorn's HTTP/1.1 protocol (httptools) with a deadline for the request line and headers.

uvicorn times out idle keep-alive connections but not a client that opens a connection and sends
its headers a byte at a time (slowloris): each such connection is held for as long as the client
likes. ``TimedHttpToolsProtocol`` closes a connection that has not delivered a complete request head
within ``http_header_timeout_seconds`` of opening, or of its previous response. ``distillery serve``
passes it as uvicorn's ``http`` option (with ``timeout_keep_alive=http_keep_alive_seconds`` and
``limit_concurrency=http_max_connections``); the body that follows is timed by the app
(``request_body_timeout_seconds``, ``app.observability``).

It builds on uvicorn's httptools protocol (the C parser) rather than h11's pure-Python one: at
500 small requests a second, or a 2.6 MB batch, h11's parsing was a visible share of the API's CPU.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings


class TimedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float | None = None  # None: from the settings

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._head_complete = False
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._head_complete = True
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request whose head has arrived already
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()  # type: ignore[union-attr]
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._head_complete = False
        timeout = self.header_timeout if self.header_timeout is not None else get_settings().http_header_timeout_seconds
        self._header_timer = self.loop.call_later(timeout, self._header_timeout_expired)

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete  # a request is being answered
        if not self._head_complete and not busy and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn options that enforce the slow-client settings (for ``distillery serve``)."""
    settings = get_settings()
    return {"http": TimedHttpToolsProtocol, "timeout_keep_alive": settings.http_keep_alive_seconds,
            "limit_concurrency": settings.http_max_connections}
