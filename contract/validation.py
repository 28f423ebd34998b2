"""Field paths for validation errors: one rule for every problem+json ``errors[].field``.

A pydantic/FastAPI location such as ``("body", "messages", 3, "text")`` becomes ``messages[3].text``:
integers are indices, strings are keys joined by dots, a leading ``"body"`` (FastAPI's marker for the
request body) is dropped, and an empty path is ``"body"``. ``prefix`` nests a sub-document's errors
under the field that held it (``config.training.lr``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NotRequired, TypedDict


class FieldError(TypedDict):
    """One entry of a problem's ``errors``: where, a stable code, and why (``op``: the edit operation
    that produced the offending span, when a span edit is refused)."""

    field: str
    code: str
    message: str
    op: NotRequired[str]


def field_path(loc: Sequence[Any], prefix: str = "") -> str:
    """``loc`` as a field path (see the module docstring), nested under ``prefix`` when given."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    out = prefix
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) and not isinstance(p, bool) else (f".{p}" if out else str(p))
    return out or "body"


def pydantic_errors(errors: Iterable[Any], prefix: str = "") -> list[FieldError]:
    """``ValidationError.errors()`` (or FastAPI's ``RequestValidationError.errors()``) as field errors."""
    return [
        FieldError(field=field_path(tuple(e.get("loc", ())), prefix), code=str(e.get("type", "invalid")),
                   message=str(e.get("msg", "")))
        for e in errors
    ]
