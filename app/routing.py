"""``CheckedRoute``: the route class of every router, checking what FastAPI's own parsing lets through.

Before a handler runs:

- every query parameter (name and value) must be storable text (``contract.pglimits``): a NUL in
  ``?source=`` is a 422 naming ``source``, not a Postgres error;
- a route that takes a body refuses a ``Content-Type`` other than JSON with 415;
- a route with a pydantic body gets it read, budgeted, parsed off the event loop (``app.body``) and
  checked for what Postgres cannot store (NUL, surrogates, nesting, integer ranges: 422 with the
  field path); FastAPI then validates the already parsed value. Routes that read their body
  themselves (ingest, job submission: marked by an ``openapi_extra`` request body) do the same
  inside their one worker-thread hop.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from app import body as request_body
from app.errors import ValidationFailed
from contract.pglimits import json_error, text_error

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def check_query(request: Request) -> None:
    errors = []
    for name, value in request.query_params.multi_items():
        for text in (name, value):
            error = text_error(text, name)
            if error is not None:
                errors.append(error)
                break
    if errors:
        raise ValidationFailed("A query parameter holds text that cannot be stored.", code="validation_error",
                               errors=errors)


def check_storable(parsed: request_body.Parsed) -> None:
    error = json_error(parsed.value, strings=not parsed.clean)
    if error is not None:
        raise ValidationFailed("The body holds a value that cannot be stored.", errors=[error])


class CheckedRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        parses_body = self.body_field is not None
        takes_body = parses_body or "requestBody" in (self.openapi_extra or {})

        async def checked(request: Request) -> Response:
            if request.scope.get("query_string"):
                check_query(request)
            if takes_body and request.method in BODY_METHODS:
                request_body.require_json(request)
                if parses_body:
                    raw = await request_body.read(request)
                    if raw:
                        parsed = await request_body.parse_off_loop(raw)
                        check_storable(parsed)
                        request._json = parsed.value
            return await handler(request)

        return checked
