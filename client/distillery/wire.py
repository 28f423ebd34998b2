"""What travels on the wire: request bodies as UTF-8 JSON, problem+json errors, Server-Sent Events."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


class DistilleryError(Exception):
    """A non-2xx answer; ``problem`` is the RFC 9457 body (or {"detail": text} for a non-JSON one)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code", f"http_{status}"))
        self.detail: str = str(problem.get("detail", ""))
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        super().__init__(f"{status} {self.code}: {self.detail}")


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: ``event`` is the kind (state, progress, log, metric, or end)."""

    id: int | None
    event: str
    data: dict[str, Any]


def _default(value: Any) -> Any:
    """The values json cannot write natively, written the way orjson (the client's former encoder) did."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """``value`` with NaN and ±inf replaced by None (JSON has no such numbers; orjson wrote null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """A request body: compact JSON, UTF-8, non-ASCII characters as themselves (never ``\\u`` escapes).

    NaN and ±inf become null; a string holding a lone surrogate (not encodable as UTF-8) is refused
    with TypeError before anything is sent.
    """
    options: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False,
                               "default": _default}
    try:
        text = json.dumps(value, **options)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise
        text = json.dumps(_finite(value), **options)  # the slow path only for the rare non-finite float
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(f"str is not valid UTF-8: {exc.reason}") from None


def problem_of(status: int, body: bytes) -> DistilleryError:
    """The error for a non-2xx answer whose body is ``body``."""
    try:
        problem = json.loads(body)
    except ValueError:
        problem = {"detail": body.decode("utf-8", "replace")[:2000]}
    return DistilleryError(status, problem if isinstance(problem, dict) else {"detail": problem})


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Server-Sent Events framing: fields until a blank line; comments (':') ignored."""
    parser = SSEParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


class SSEParser:
    """Line-at-a-time SSE framing, shared by the sync and async streams."""

    def __init__(self) -> None:
        self.event_id: int | None = None
        self.kind = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line == "":
            event = None
            if self.data:
                payload = "\n".join(self.data)
                try:
                    parsed = json.loads(payload)
                except ValueError:
                    parsed = {"raw": payload}
                event = Event(id=self.event_id, event=self.kind,
                              data=parsed if isinstance(parsed, dict) else {"value": parsed})
            self.event_id, self.kind, self.data = None, "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.kind = value
        elif name == "id":
            try:
                self.event_id = int(value)
            except ValueError:
                self.event_id = None
        return None
