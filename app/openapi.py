"""The OpenAPI document says what errors really look like: RFC 9457 ``application/problem+json``.

FastAPI documents a 422 as its own ``HTTPValidationError``; every error this API sends is a problem
(``app.errors``). ``document_problems`` rewrites each operation's 4xx/5xx responses to the
``Problem`` schema and adds a ``default`` response for the statuses an operation does not list
(401, 403, 413, 415, 429, 503 can come from any route), so a client generated from the schema, and
the property-based run in ``tests/app/test_schema_fuzz.py``, see the truth.
"""

from __future__ import annotations

from typing import Any

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details with a stable code; validation problems name each field.",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string", "description": "Stable, machine-readable (e.g. validation_error)."},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["field", "code", "message"],
            "properties": {"field": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"},
                           "op": {"type": "string"}}}},
    },
    "additionalProperties": True,
}


def document_problems(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, response in responses.items():
                if str(status)[:1] in ("4", "5"):
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}
            responses.setdefault("default", {"description": "An error (problem+json).",
                                             "content": {"application/problem+json": {"schema": PROBLEM_REF}}})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
