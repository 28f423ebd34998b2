"""OTLP/HTTP bodies: `ExportTraceServiceRequest` in (protobuf or JSON, optionally gzip) as the JSON
encoding's dict shape, and `ExportTraceServiceResponse` out in the request's encoding.

Protobuf is decoded here, in the app; the contract only ever sees the JSON shape (hex ids).
A gzip body may inflate to at most the same byte limit as a plain one (413 beyond it).
"""

from __future__ import annotations

import base64
import binascii
import email.message
import zlib
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from app import body as request_body
from app.errors import AppError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BadRequest(AppError):
    """OTLP/HTTP answers data it cannot decode with 400 (clients do not retry it)."""

    status, code, title = 400, "invalid_otlp", "Bad request"


@dataclass(frozen=True)
class Decoded:
    value: dict[str, Any]
    protobuf: bool


def media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    message = email.message.Message()
    message["content-type"] = content_type
    return message.get_content_type()


def _inflate(data: bytes | bytearray, limit: int) -> bytes:
    """gzip (every member, as `gzip.decompress` reads it) into at most `limit` bytes."""
    out, rest = bytearray(), bytes(data)
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest(f"The body is not valid gzip: {exc}.") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"The body inflates to more than {limit} bytes; nothing was stored.",
                                  limit={"name": "bytes", "max": limit})
        if not inflater.eof:
            raise BadRequest("The gzip body is truncated.")
        rest = inflater.unused_data
    return bytes(out)


def _any_values(value: Any) -> int:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return 1 + sum(_any_values(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return 1 + sum(1 + _any_values(kv.value) for kv in value.kvlist_value.values)
    return 1


def _check_values(message: ExportTraceServiceRequest, size: int) -> None:
    """The JSON path's value budget (`app.body`) for a protobuf body, counted before any dict is built:
    a few bytes of protobuf can stand for an attribute, which costs far more as Python objects."""
    budget, count = request_body.value_budget(size), 0
    for rs in message.resource_spans:
        count += 1 + 2 * len(rs.resource.attributes)
        for ss in rs.scope_spans:
            count += 1 + len(ss.spans)
            for span in ss.spans:
                count += sum(1 + _any_values(kv.value) for kv in span.attributes)
                for event in span.events:
                    count += 1 + sum(1 + _any_values(kv.value) for kv in event.attributes)
                count += len(span.links)
                if count > budget:
                    raise PayloadTooLarge(
                        f"The body holds more than {budget} values ({request_body.BYTES_PER_VALUE} bytes per value, "
                        f"at least {request_body.MIN_VALUE_BUDGET}); nothing was stored.", code="too_many_values",
                        limit={"name": "values", "max": budget})


def _ids_to_hex(body: dict[str, Any]) -> dict[str, Any]:
    """`MessageToDict` writes bytes (trace and span ids) in base64; the JSON encoding uses hex."""
    for rs in body.get("resourceSpans") or []:
        for ss in rs.get("scopeSpans") or []:
            for sp in ss.get("spans") or []:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if isinstance(sp.get(key), str):
                        sp[key] = base64.b64decode(sp[key]).hex()
    return body


def decode(data: bytes | bytearray, content_type: str | None, content_encoding: str | None, limit: int) -> Decoded:
    """The request as the JSON encoding's dict; 400 / 413 / 415 problems otherwise."""
    kind = media_type(content_type)
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(f"OTLP/HTTP bodies are {PROTOBUF} or {JSON}, not {content_type!r}.")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        data = _inflate(data, limit)
    elif encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {content_encoding!r} is not supported (gzip or none).",
                                   code="unsupported_content_encoding")
    if kind == PROTOBUF:
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(bytes(data))
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadRequest(f"The body is not an ExportTraceServiceRequest: {exc}.") from None
        _check_values(message, len(data))
        try:
            value = json_format.MessageToDict(message)
        except (ValueError, binascii.Error) as exc:
            raise BadRequest(f"The request cannot be read: {exc}.") from None
        return Decoded(_ids_to_hex(value), protobuf=True)
    try:
        parsed = request_body.parse(data)
    except ValidationFailed as exc:
        raise BadRequest(exc.detail) from None
    return Decoded(parsed.value, protobuf=False)


def response(rejected_spans: int, error_message: str, protobuf: bool) -> tuple[bytes, str]:
    """An `ExportTraceServiceResponse` (partial_success only when something was rejected)."""
    message = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        message.partial_success.rejected_spans = rejected_spans
        message.partial_success.error_message = error_message
    if protobuf:
        return message.SerializeToString(), PROTOBUF
    return json_format.MessageToJson(message, indent=None).encode(), JSON
