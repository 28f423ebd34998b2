"""JSON values inside the canonical messages: reading a JSON text (``try_json``), writing one as the
standard library does (``json_text``: what rendered tool calls hold), and checking that a value can be
stored (``is_json_value``). Both codecs give the standard library's results, faster: they run for every
tool call of every trajectory ingested.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

import orjson

from contract.pglimits import JSON_INT_MAX, JSON_INT_MIN, MAX_JSON_DEPTH, unstorable_at

ARGUMENTS_DEPTH = 4  # messages[i].tool_calls[j].arguments: where parsed arguments sit in the stored messages
_MAX_JSON_NODES = 100_000
UNSTORABLE_JSON = "holds values that cannot be stored (NUL, lone surrogates, or too large)"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: json.loads/json.dumps with keyword arguments construct a new codec on every call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False)  # the output of json.dumps(..., ensure_ascii=False)
# JSONEncoder.encode also builds its C encoder on every call (a third of a tool call's rendering); this one is
# built once, with the same settings. No circular-reference marks: values come from JSON, and the
# interpreter's recursion limit still ends a cycle (RecursionError).
_C_ENCODE = None if c_make_encoder is None else c_make_encoder(
    None, _ENCODER.default, encode_basestring, None, _ENCODER.key_separator, _ENCODER.item_separator,
    _ENCODER.sort_keys, _ENCODER.skipkeys, _ENCODER.allow_nan)


def json_text(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)``, byte for byte (the text rendered tool calls hold)."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


_LONG_DIGITS = re.compile("[0-9]{19}")  # maybe an integer orjson would round to a float


def try_json(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is strict JSON (no NaN/Infinity), else (False, None); the value is the
    standard library's. orjson reads it when it can (twice as fast): it refuses what the standard library
    would read differently (a number beyond a double, a lone surrogate escape, 1,024 levels), and text with
    19 digits in a row, where it would round an integer, goes to the standard library directly."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return True, orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # the standard library decides
    try:
        return True, _DECODER.decode(text)
    except (ValueError, RecursionError):
        return False, None


def is_json_value(value: Any, depth: int = ARGUMENTS_DEPTH) -> bool:
    """True for a JSON-compatible tree (str keys) bounded in size that ``contract.pglimits`` can store when it
    sits ``depth`` levels deep in the canonical messages (tool-call arguments sit 4 deep): storable text,
    integers in range, finite numbers, nesting within ``MAX_JSON_DEPTH``, at most ``_MAX_JSON_NODES`` values.

    Containers are walked with a stack; their members are checked in place, the exact JSON types first (what
    a parser builds), anything else by ``_is_json_scalar``."""
    if not isinstance(value, dict | list):
        return _is_json_scalar(value)
    stack, nodes = [(value, depth)], 1
    while stack:
        v, level = stack.pop()
        if level >= MAX_JSON_DEPTH:
            return False
        nodes += len(v)
        if nodes > _MAX_JSON_NODES:
            return False
        members: Iterable[Any] = v
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str) or unstorable_at(k) >= 0:
                    return False
            members = v.values()
        for item in members:
            kind = type(item)
            if kind is str:
                if unstorable_at(item) >= 0:
                    return False
            elif kind is int:
                if not JSON_INT_MIN <= item <= JSON_INT_MAX:
                    return False
            elif kind is dict or kind is list or isinstance(item, dict | list):
                stack.append((item, level + 1))
            elif not (item is None or kind is bool or _is_json_scalar(item)):
                return False
    return True


def _is_json_scalar(v: Any) -> bool:
    if isinstance(v, str):
        return unstorable_at(v) < 0
    if isinstance(v, bool) or v is None:
        return True
    if isinstance(v, int):
        return JSON_INT_MIN <= v <= JSON_INT_MAX
    if isinstance(v, float):
        return math.isfinite(v)
    return False
