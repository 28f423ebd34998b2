"""Domain errors and their RFC 9457 problem+json rendering.

Every error a client can see is an ``AppError`` with an HTTP status and a stable ``code``::

    AppError (500 internal_error)
    ├── ValidationFailed (422 validation_error)      per-field ``errors``
    ├── PayloadTooLarge (413 payload_too_large)      states the limit
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)                     names the missing scope
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)                       idempotency / state clashes
    ├── PreconditionFailed (412 precondition_failed)
    ├── PreconditionRequired (428 precondition_required)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── RequestTimeout (408 request_timeout)           a client too slow to send its body
    ├── TooManyRequests (429 rate_limited)            with Retry-After
    └── ServiceUnavailable (503 database_unavailable; database_timeout)

Services raise these; ``install_error_handlers`` turns them (and FastAPI's own validation and
HTTP errors, and a lost database) into ``application/problem+json``.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from contract.validation import FieldError, pydantic_errors

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.errors = errors
        self.headers = headers
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://distillery.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        # Extras never shadow the problem's own members: ``status`` is always the HTTP status code.
        body.update({k: v for k, v in self.extra.items() if k not in body})
        return body


class ValidationFailed(AppError):
    status, code, title = 422, "validation_error", "Validation failed"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PreconditionFailed(AppError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class PreconditionRequired(AppError):
    status, code, title = 428, "precondition_required", "Precondition required"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RequestTimeout(AppError):
    status, code, title = 408, "request_timeout", "Request timeout"


class TooManyRequests(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(AppError):
    status, code, title = 503, "database_unavailable", "Service unavailable"


def problem_response(err: AppError, request: Request | None = None) -> JSONResponse:
    headers = dict(err.headers or {})
    if err.status == 503:
        headers.setdefault("Retry-After", "1")
    return JSONResponse(
        err.to_problem(str(request.url.path) if request else None),
        status_code=err.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def validation_errors(exc: RequestValidationError) -> list[FieldError]:
    return pydantic_errors(exc.errors())


# query_canceled (statement_timeout) and lock_not_available (lock_timeout): psycopg files both under
# OperationalError, like a lost connection, but they say the server is up and only this request waited too long.
_TIMED_OUT = frozenset({"57014", "55P03"})


def is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | PoolTimeout | psycopg.OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def sqlstate(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "orig", exc), "sqlstate", "") or "")


def log_error(message: str, exc: BaseException, **extra: Any) -> None:
    """Log an error's class and stack, never its message: database errors quote the statement's values
    and other errors may quote the request, and neither payload text nor key material goes to logs."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error(message, extra={"error_class": f"{type(exc).__module__}.{type(exc).__qualname__}", "stack": frames,
                              **extra})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = ValidationFailed("The request is not valid.", errors=validation_errors(exc))
        return problem_response(err, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}
        err = AppError(str(exc.detail), code=codes.get(exc.status_code, f"http_{exc.status_code}"))
        err.status = exc.status_code
        err.title = str(exc.detail)
        return problem_response(err, request)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(psycopg.Error)  # statements run on the driver's cursor (the ingest insert)
    async def _db_error(request: Request, exc: Exception) -> JSONResponse:
        state = sqlstate(exc)
        driver = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error: name the driver's
        cause = {"sqlstate": state, "error_class": f"{type(driver).__module__}.{type(driver).__qualname__}"}
        if state in _TIMED_OUT:  # statement_timeout or lock_timeout: the server is there but did not finish
            log.warning("database statement timed out", extra=cause)
            return problem_response(ServiceUnavailable(
                "The database did not finish in time (a statement or lock timeout); nothing was stored. Retry.",
                code="database_timeout"), request)
        if is_connection_error(exc):
            log.warning("database unavailable", extra=cause)
            return problem_response(ServiceUnavailable("The database is unreachable; nothing was stored."), request)
        if state.startswith("22") or state == "54000":  # data exception / program limit: the input's fault
            log.warning("database refused a value", extra={"sqlstate": state})
            return problem_response(ValidationFailed(
                "A value in the request cannot be stored; nothing was stored.", code="unstorable_value"), request)
        log_error("database error", exc, sqlstate=state)
        return problem_response(AppError("Unexpected database error; nothing was stored."), request)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        return problem_response(ServiceUnavailable("No database connection available; nothing was stored."), request)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log_error("unhandled error", exc)
        return problem_response(AppError("Unexpected error; nothing was stored."), request)
