"""Trajectory formats: `parse(fmt, payload)` turns a request's format-specific fields into canonical
messages plus auto spans, `export(fmt, …)` writes canonical messages back in a format's own fields
(parse → export → parse gives byte-identical messages and the same auto spans), and
`canonical_sha256` fingerprints canonical messages. Each format module documents its rules; the
shared segmentation rules are in `base`. Pure Python: no database, web framework or torch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import orjson

from contract.formats import openai, react, sharegpt, smolagents
from contract.formats.base import FormatError, ParsedTrajectory, fail, json_type
from contract.spans import Message, Span

_REGISTRY: dict[str, ModuleType] = {"openai": openai, "react": react, "smolagents": smolagents,
                                    "sharegpt": sharegpt}
FORMATS: tuple[str, ...] = tuple(_REGISTRY)


def _module(fmt: str) -> ModuleType:
    module = _REGISTRY.get(fmt) if isinstance(fmt, str) else None
    if module is None:
        fail("format", "unknown_format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return module


def parse(fmt: str, payload: dict[str, Any]) -> ParsedTrajectory:
    """Canonical messages, auto spans and tools of `payload`; bad input raises FormatError only."""
    module = _module(fmt)
    if not isinstance(payload, dict):
        fail("payload", "invalid_type", f"must be an object, got {json_type(payload)}")
    parsed: ParsedTrajectory = module.parse(payload)
    return parsed


def export(fmt: str, messages: Sequence[Message], tools: list[Any] | None,
           spans: Sequence[Span] | None = None) -> dict[str, Any]:
    """The format's own fields for canonical `messages`. No format can carry spans; `spans` is ignored."""
    result: dict[str, Any] = _module(fmt).export(messages, tools)
    return result


def canonical_sha256(messages: Sequence[Message]) -> str:
    """sha256 of the messages as compact JSON with sorted keys, UTF-8 (non-ASCII unescaped).

    The encoding is orjson's (``OPT_SORT_KEYS``): the same bytes as ``json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` except for how float exponents are spelled, and
    about 20× faster (this runs on every ingest). Values orjson refuses (integers beyond 64 bits)
    fall back to ``json.dumps``, so the digest stays a pure function of the messages.
    """
    try:
        data = orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        data = json.dumps(messages, ensure_ascii=False, sort_keys=True,
                          separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


__all__ = ["FORMATS", "FormatError", "ParsedTrajectory", "canonical_sha256", "export", "parse"]
