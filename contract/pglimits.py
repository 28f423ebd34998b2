"""What Postgres (and the JSON serializer in front of it) can store: the one place that knows.

Checked before anything reaches the database, so that no input answers 5xx; each refusal is a
``FieldError`` naming the field (``metadata.k[0]``), which the API answers as 422:

- text (``text`` columns, ``jsonb`` strings and keys) holds no U+0000 (NUL) and no lone UTF-16
  surrogate (``invalid_character``);
- JSON documents nest at most ``MAX_JSON_DEPTH`` levels (``too_deep``; orjson writes 254 at most
  and the parsers read 1024), hold integers in ``JSON_INT_MIN..JSON_INT_MAX`` (what orjson writes;
  ``integer_out_of_range``) and finite numbers only (``not_finite``);
- ``integer`` / ``bigint`` columns and parameters take ``INT4_*`` / ``INT8_*`` (``Int4``, ``Int8``
  below, for pydantic fields and query parameters);
- a B-tree index row is at most 2704 bytes: the keys of a unique or searchable text index stay
  under ``INDEX_KEY_MAX_BYTES`` together (``index_row_too_large``);
- numbers in query strings and headers are ASCII digits (``str.isdigit`` also takes ``"²"``).

Torch-, database- and web-framework-free: the API and the format parsers both use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import Field

from contract.validation import FieldError

INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1
JSON_INT_MIN, JSON_INT_MAX = -(2**63), 2**64 - 1
MAX_JSON_DEPTH = 64
INDEX_KEY_MAX_BYTES = 2600  # B-tree rows are capped at 2704 bytes, tuple and length headers included

Int4 = Annotated[int, Field(ge=INT4_MIN, le=INT4_MAX)]
NonNegativeInt4 = Annotated[int, Field(ge=0, le=INT4_MAX)]
PositiveInt4 = Annotated[int, Field(ge=1, le=INT4_MAX)]
NonNegativeInt8 = Annotated[int, Field(ge=0, le=INT8_MAX)]

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_DIGITS = re.compile(r"[0-9]{1,18}")  # 18 digits always fit in a bigint


def unstorable_at(value: str) -> int:
    """Offset of the first NUL or lone surrogate in ``value``, or -1.

    ASCII text (CPython keeps that as a flag, so the test costs nothing) can only hold NUL, which a C
    scan finds about 50× faster than the regular expression needs over the same text; ingest checks
    every string it keeps, so this is the common case."""
    if value.isascii():
        return value.find("\x00")
    bad = UNSTORABLE.search(value)
    return -1 if bad is None else bad.start()


def _error(field: str, code: str, message: str) -> FieldError:
    return {"field": field, "code": code, "message": message}


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def text_error(value: str, field: str) -> FieldError | None:
    """NUL or a lone surrogate in ``value``, as a field error (None when storable)."""
    at = unstorable_at(value)
    if at < 0:
        return None
    what = "U+0000 (NUL)" if value[at] == "\x00" else "a lone UTF-16 surrogate"
    return _error(field, "invalid_character", f"contains {what} at offset {at}, which cannot be stored")


def _storable(value: Any, depth: int, strings: bool) -> bool:
    """The quick pass of ``json_error``: no paths are built (most documents have nothing to report)."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        node, level = stack.pop()
        if level >= MAX_JSON_DEPTH:
            return False
        for key, child in (node.items() if type(node) is dict else enumerate(node)):
            if strings and type(key) is str and unstorable_at(key) >= 0:
                return False
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, level + 1))
            elif kind is str:
                if strings and unstorable_at(child) >= 0:
                    return False
            elif kind is int:
                if not JSON_INT_MIN <= child <= JSON_INT_MAX:
                    return False
            elif kind is float and not math.isfinite(child):
                return False
    return True


def json_error(value: Any, field: str = "", *, depth: int = 0, strings: bool = True) -> FieldError | None:
    """The first part of a JSON document that cannot be stored, or None.

    ``depth`` is the nesting level ``value`` already sits at; ``strings=False`` skips the text check
    (the caller knows the document came from bytes with no ``\\u0000`` or surrogate escapes).
    """
    if type(value) in (dict, list) and _storable(value, depth, strings):
        return None
    stack: list[tuple[Any, str, int]] = [(value, field, depth)]
    while stack:
        node, path, level = stack.pop()
        kind = type(node)
        if kind is str:
            if strings and unstorable_at(node) >= 0:
                return text_error(node, path or "body")
        elif kind is dict or kind is list:
            if level >= MAX_JSON_DEPTH:
                return _error(path or "body", "too_deep", f"nests deeper than {MAX_JSON_DEPTH} levels")
            items: Iterable[tuple[Any, Any]] = node.items() if kind is dict else enumerate(node)
            for key, child in items:
                if kind is dict and strings and unstorable_at(key) >= 0:
                    return text_error(key, _join(path, "<key>"))
                child_kind = type(child)
                if child_kind is dict or child_kind is list or (strings and child_kind is str):
                    stack.append((child, _join(path, key), level + 1))
                elif child_kind is int:
                    if not JSON_INT_MIN <= child <= JSON_INT_MAX:
                        return _error(_join(path, key), "integer_out_of_range",
                                      f"integers must lie in {JSON_INT_MIN}..{JSON_INT_MAX}")
                elif child_kind is float and not math.isfinite(child):
                    return _error(_join(path, key), "not_finite", "numbers must be finite")
        elif kind is int:
            if not JSON_INT_MIN <= node <= JSON_INT_MAX:
                return _error(path or "body", "integer_out_of_range",
                              f"integers must lie in {JSON_INT_MIN}..{JSON_INT_MAX}")
        elif kind is float and not math.isfinite(node):
            return _error(path or "body", "not_finite", "numbers must be finite")
    return None


def index_key_error(parts: dict[str, str | None], field: str) -> FieldError | None:
    """The text parts of one index row together over ``INDEX_KEY_MAX_BYTES`` (UTF-8), as an error on ``field``."""
    size = sum(len(v.encode("utf-8", "surrogatepass")) for v in parts.values() if v is not None)
    if size <= INDEX_KEY_MAX_BYTES:
        return None
    names = " + ".join(parts)
    return _error(field, "index_row_too_large",
                  f"{names} take {size} bytes in UTF-8; together they must stay within {INDEX_KEY_MAX_BYTES}")


def parse_digits(value: str) -> int | None:
    """A non-negative integer written with at most 18 ASCII digits (so it fits a bigint), else None."""
    return int(value) if _DIGITS.fullmatch(value) else None
