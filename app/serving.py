"""uvicorn's HTTP/1.1 protocol with a deadline for the request line and headers.

uvicorn times out idle keep-alive connections but not a client that opens a connection and sends
its headers a byte at a time (slowloris): each such connection is held for as long as the client
likes. ``TimedH11Protocol`` closes a connection that has not delivered a complete request head within
``http_header_timeout_seconds`` of opening, or of its previous response. ``distillery serve`` passes
it as uvicorn's ``http`` option (with ``timeout_keep_alive=http_keep_alive_seconds`` and
``limit_concurrency=http_max_connections``); the body that follows is timed by the app
(``request_body_timeout_seconds``, ``app.observability``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import get_settings


class TimedH11Protocol(H11Protocol):
    header_timeout: float | None = None  # None: from the settings

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()  # type: ignore[union-attr]
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        timeout = self.header_timeout if self.header_timeout is not None else get_settings().http_header_timeout_seconds
        self._header_timer = self.loop.call_later(timeout, self._header_timeout_expired)

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        # h11 stays IDLE on our side of the peer until a whole request head has arrived
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn options that enforce the slow-client settings (for ``distillery serve``)."""
    settings = get_settings()
    return {"http": TimedH11Protocol, "timeout_keep_alive": settings.http_keep_alive_seconds,
            "limit_concurrency": settings.http_max_connections}
