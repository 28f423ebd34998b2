"""Trajectory formats: `parse(fmt, payload)` turns a request's format-specific fields into canonical
messages plus auto spans, `export(fmt, …)` writes canonical messages back in a format's own fields
(parse → export → parse gives byte-identical messages and the same auto spans), and
`canonical_sha256` fingerprints canonical messages. Each format module documents its rules; the
shared segmentation rules are in `segment`. Pure Python: no database, web framework or torch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import orjson

from contract.formats import anthropic, openai, otlp, react, responses, sharegpt, smolagents, swe_agent
from contract.formats.base import FormatError, ParsedTrajectory, fail, json_type
from contract.formats.segment import observations_in_user_turns
from contract.spans import Message, Span

_REGISTRY: dict[str, ModuleType] = {"openai": openai, "react": react, "smolagents": smolagents,
                                    "sharegpt": sharegpt, "anthropic": anthropic,
                                    "openai-responses": responses, "swe-agent": swe_agent, "otlp": otlp}
FORMATS: tuple[str, ...] = tuple(_REGISTRY)


def _module(fmt: str) -> ModuleType:
    module = _REGISTRY.get(fmt) if isinstance(fmt, str) else None
    if module is None:
        fail("format", "unknown_format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return module


def parse(fmt: str, payload: dict[str, Any]) -> ParsedTrajectory:
    """Canonical messages, auto spans and tools of `payload`; bad input raises FormatError only.

    `payload["observation_role"]` (the request option, any format): "user" says the user messages
    after the first trained assistant message feed observations back (they are marked
    `"observation": true` and get observation spans; see `segment`); null or absent: only the log's
    own marks count.
    """
    module = _module(fmt)
    if not isinstance(payload, dict):
        fail("payload", "invalid_type", f"must be an object, got {json_type(payload)}")
    role = payload.get("observation_role")
    if role not in (None, "user"):
        fail("observation_role", "invalid_value", f'must be "user" or null, got {role!r}')
    if "observation_role" in payload:
        payload = {k: v for k, v in payload.items() if k != "observation_role"}
    with observations_in_user_turns(role == "user"):
        parsed: ParsedTrajectory = module.parse(payload)
    return parsed


def export(fmt: str, messages: Sequence[Message], tools: list[Any] | None,
           spans: Sequence[Span] | None = None) -> dict[str, Any]:
    """The format's own fields for canonical `messages`. No format can carry spans; `spans` is ignored.
    Messages marked as observations add `observation_role: "user"` unless the format writes the
    marks itself (`MARKS_OBSERVATION_USERS`)."""
    module = _module(fmt)
    result: dict[str, Any] = module.export(messages, tools)
    if not getattr(module, "MARKS_OBSERVATION_USERS", False) and any(m.get("observation") for m in messages):
        result["observation_role"] = "user"
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
