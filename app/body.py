"""JSON request bodies: read with a bounded buffer, refused early when over budget, parsed off the event loop.

Memory per request is bounded before any Python object is built. The body's bytes arrive in one
buffer (the byte limit is enforced as they arrive, see ``app.observability``); then a C-speed count
of ``{``, ``[`` and ``,`` bounds how many JSON values parsing would create, and a body holding more
than one value per ``BYTES_PER_VALUE`` bytes (and more than ``MIN_VALUE_BUDGET``) is refused with 413
``too_many_values`` before it is parsed: a 60 MiB batch of ``{}`` items costs its bytes, not 2 GB.
The bound that results is documented (and measured) in ``docs/reliability.md``.

Parsing runs in a worker thread for bodies over ``INLINE_PARSE_BYTES``. orjson parses; a body that
holds 19 digits in a row, or that orjson refuses (a lone surrogate escape, a number beyond a double),
is parsed by the standard library instead, which keeps such values exact (orjson would round a large
integer to a float, or refuse the whole body for one bad string), so ``contract.pglimits`` can name
the one field that cannot be stored, and a batch fails only the item that holds it. A body parsed by
orjson without a ``\\u0000`` escape is clean of unstorable text and numbers by construction (raw NUL
and surrogate bytes are not valid JSON or UTF-8), which ``Parsed.clean`` tells the checks that follow.
"""

from __future__ import annotations

import email.message
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from app.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

BYTES_PER_VALUE = 16
MIN_VALUE_BUDGET = 250_000
INLINE_PARSE_BYTES = 64 * 1024
_DIGITS_TO_9 = bytes.maketrans(b"012345678", b"999999999")
_LONG_NUMBER = b"9" * 19  # 19 digits in a row: maybe an integer orjson would round to a float
_SCAN_CHUNK = 1 << 20


@dataclass(frozen=True)
class Parsed:
    value: Any
    clean: bool  # no string can hold NUL or a lone surrogate; no integer is out of range


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def is_json_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (parameters such as charset allowed)."""
    if not content_type:
        return True  # no header: taken as JSON, as FastAPI does (clients that send bytes say what they are)
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if not is_json_type(content_type):
        raise UnsupportedMediaType(f"The body must be JSON (Content-Type: application/json), not {content_type!r}.",
                                   code="unsupported_media_type")


Body = bytes | bytearray


async def read(request: Request) -> Body:
    """The whole body in one buffer, never copied (cached on the request, so FastAPI's own read finds it)."""
    cached = getattr(request, "_body", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk  # grows in place (amortized); chunks are freed as they are copied in
    request._body = buffer  # type: ignore[assignment]  # a bytes-like Starlette and FastAPI only test and read
    return buffer


def value_budget(size: int) -> int:
    return max(MIN_VALUE_BUDGET, size // BYTES_PER_VALUE)


def parse(body: Body) -> Parsed:
    """Parse a JSON body after the value budget check (see the module docstring); 413/422 on failure."""
    values = len(body) - len(body.translate(None, b",{[")) + 1  # one pass (three counts take twice as long)
    budget = value_budget(len(body))
    if values > budget:
        raise PayloadTooLarge(
            f"The body may hold up to {budget} JSON values ({BYTES_PER_VALUE} bytes per value, at least "
            f"{MIN_VALUE_BUDGET}); it holds up to {values}. Nothing was stored.",
            code="too_many_values", limit={"name": "values", "max": budget, "actual": values})
    if not _has_long_digit_run(body):
        try:
            return Parsed(orjson.loads(body), clean=body.find(b"\\u0000") < 0)
        except orjson.JSONDecodeError:
            pass  # not JSON, or a lone surrogate or a number beyond a double: the standard library decides
    try:
        return Parsed(_DECODER.decode(bytes(body).decode("utf-8")), clean=False)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, > 4300 digits, too deep
        raise ValidationFailed(f"The body is not valid JSON: {exc}", code="invalid_json") from None


def _has_long_digit_run(body: Body) -> bool:
    """19 digits in a row anywhere (strings included: a false alarm only costs the slower parser)."""
    for start in range(0, len(body), _SCAN_CHUNK):
        window = body[start:start + _SCAN_CHUNK + len(_LONG_NUMBER) - 1].translate(_DIGITS_TO_9)
        if window.find(_LONG_NUMBER) >= 0:
            return True
    return False


async def parse_off_loop(body: Body) -> Parsed:
    if len(body) <= INLINE_PARSE_BYTES:
        return parse(body)
    return await run_in_threadpool(parse, body)


_WS = re.compile(r"[ \t\n\r]*")


def _array_spans(body: Body, key: str) -> list[tuple[int, int]]:
    """Byte ranges of the elements of the top-level object's array ``key`` (the last such key wins, as in
    parsing). Latin-1 maps each byte to one character, so string offsets are byte offsets."""
    text = body.decode("latin-1")
    scan = _DECODER.scan_once  # type: ignore[attr-defined]  # the C scanner: one value and where it ends
    spans: list[tuple[int, int]] = []
    i = _WS.match(text, 0).end() + 1  # type: ignore[union-attr]  # past "{"
    while True:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if text[i] == "}":
            return spans
        name, i = scan(text, i)
        i = _WS.match(text, i).end() + 1  # type: ignore[union-attr]  # past ":"
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if name == key and text[i] == "[":
            spans, i = [], i + 1
            while True:
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text[i] == "]":
                    i += 1
                    break
                _, end = scan(text, i)
                spans.append((i, end))
                i = _WS.match(text, end).end()  # type: ignore[union-attr]
                i += 1 if text[i] == "," else 0
        else:
            _, i = scan(text, i)
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        i += 1 if text[i] == "," else 0


def item_texts(body: Body, items: list[Any], wanted: Collection[int], key: str = "items") -> dict[int, str]:
    """The exact text the elements ``wanted`` of ``body[key]`` had in the request (``original=true``).

    Compact bodies (what orjson, httpx and most clients write) are recognised by comparing the body
    with each element's own serialization in turn (only the wanted ones are kept, so an item refused
    for its size costs its serialization only for a moment); any other spelling (whitespace, escapes,
    number forms, duplicate keys) is sliced out of the body by a scan of its structure.
    """
    head = b'{"' + key.encode() + b'":['
    texts: dict[int, str] = {}
    pos, same = len(head), bool(items) and body.startswith(head)
    for k, item in enumerate(items):
        try:
            piece = orjson.dumps(item)
        except (orjson.JSONEncodeError, TypeError):
            same = False
        after = b"," if k + 1 < len(items) else b"]}"
        if not (same and body.startswith(piece, pos) and body.startswith(after, pos + len(piece))):
            same = False
            break
        if k in wanted:
            texts[k] = piece.decode()
        pos += len(piece) + len(after)
        del piece
    if same and pos == len(body):
        return texts
    spans = _array_spans(body, key)
    return {k: bytes(body[spans[k][0]:spans[k][1]]).decode("utf-8", "surrogatepass") for k in wanted}
