"""Trace ingestion rules: one trace → one trajectory of format ``otlp``, stored through the
trajectories service (same validation, limits, idempotency by (source, external_id)).

A trace may arrive over several export requests (the SDK's BatchSpanProcessor sends spans as they
end, so the root span comes last). The spans received so far are kept as the trajectory's raw
payload (``original=true`` gives them back as an OTLP/JSON request). When more spans of a stored
trace arrive, they are merged with the stored ones (a span sent again replaces its copy), the trace
is assembled again, and:
- the same request as stored → nothing changes (an exporter's retry);
- otherwise the trajectory is replaced by the extended one, while it is untouched: still
  ``pending`` at span revision 1, claimed by no annotator and in no dataset (under the same id, so a
  link to it stays good; metadata ``otlp.complete`` says whether the root span has arrived). A
  trajectory that was claimed, reviewed, annotated or put in a dataset is never changed: the later
  spans are rejected (``partial_success``), so nothing is dropped silently.
Each trace is stored in its own savepoint: a trace that is refused does not undo the others.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.auth import Principal
from app.config import Settings
from app.datasets import service as datasets
from app.errors import AppError, Forbidden, sqlstate
from app.traces import repository as repo
from app.traces.codec import BadRequest
from app.trajectories import repository as trajectories_repo
from app.trajectories import service as trajectories
from contract.formats.base import FormatError
from contract.formats.otlp_spans import (
    OtlpSpan,
    encode_spans,
    group_traces,
    merge,
    read_request,
    trace_key,
    trace_request,
)

_MAX_ERROR_CHARS = 4000


@dataclass
class ExportResult:
    """What an export request did: traces stored (new or extended), unchanged, and spans rejected."""

    stored: int = 0
    unchanged: int = 0
    rejected_spans: int = 0
    errors: list[str] = field(default_factory=list)

    def error_message(self) -> str:
        message = "; ".join(self.errors)
        return message if len(message) <= _MAX_ERROR_CHARS else message[: _MAX_ERROR_CHARS - 1] + "…"


class _Raced(Exception):
    """Another request stored the same trace first; read it again and merge."""


def ingest_export(session: Session, body: Any, settings: Settings, principal: Principal) -> ExportResult:
    """Store every trace of an `ExportTraceServiceRequest` (JSON-encoding dict). 400 when it is not one."""
    try:
        spans = read_request(body)
    except FormatError as exc:
        raise BadRequest(f"The body is not a valid ExportTraceServiceRequest: {exc}", errors=exc.errors) from None
    result = ExportResult()
    for trace_id, trace_spans in group_traces(spans).items():
        try:
            changed = _ingest_trace(session, trace_spans, settings, principal)
        except (AppError, FormatError) as exc:
            result.rejected_spans += len(trace_spans)
            result.errors.append(f"trace {trace_id}: {_reason(exc)}")
            continue
        if changed:
            result.stored += 1
        else:
            result.unchanged += 1
    return result


def _reason(exc: Exception) -> str:
    if isinstance(exc, AppError):
        detail = exc.detail
        if exc.errors:
            detail += " (" + "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors[:3]) + ")"
        return f"{exc.code}: {detail}"
    first = exc.errors[0] if isinstance(exc, FormatError) and exc.errors else None
    return f"{first['code']}: {first['field']} {first['message']}" if first else str(exc)


def _ingest_trace(session: Session, spans: list[OtlpSpan], settings: Settings, principal: Principal) -> bool:
    for attempt in range(3):
        savepoint = session.begin_nested()
        try:
            changed = _store(session, spans, settings, principal, last_try=attempt == 2)
        except _Raced:
            savepoint.rollback()
            continue
        except (AppError, FormatError):
            savepoint.rollback()
            raise
        except (DBAPIError, psycopg.Error) as exc:  # the ingest insert runs on the driver's own cursor
            savepoint.rollback()
            state = sqlstate(exc)
            if state.startswith("22") or state == "54000":  # the input's fault: this trace only
                raise AppError("A value in the trace cannot be stored.", code="unstorable_value") from None
            raise
        savepoint.commit()
        return changed
    raise AppError("The trace changed concurrently; retry.", code="conflict")  # not reached: last_try raises


def _store(session: Session, spans: list[OtlpSpan], settings: Settings, principal: Principal, *,
           last_try: bool) -> bool:
    source, external_id = trace_key(spans)
    if not principal.may_write(source):
        raise Forbidden(f"This API key may not write to source {source!r}.", code="source_not_allowed")
    stored = repo.stored_trace(session, source, external_id)
    if stored is not None and stored.format != "otlp":
        raise AppError(f"source {source!r} already holds external_id {external_id!r} from a {stored.format} "
                       "trajectory.", code="external_id_conflict")
    if stored is not None:
        with contextlib.suppress(FormatError, orjson.JSONDecodeError):  # raw not from here: the new spans alone
            spans = merge(read_request(orjson.loads(stored.raw)), spans)
    item = trace_request(spans)
    raw = _raw_text(spans)
    if stored is not None:
        if trajectories.request_sha256(item) == stored.request_sha256:
            return False
        if stored.status != "pending" or stored.span_revision != 1 or stored.claimed:
            state = "claimed by an annotator" if stored.claimed else f"{stored.status} at span revision " \
                f"{stored.span_revision}"
            raise AppError(f"The trajectory of this trace ({stored.id}) is already {state}; later spans are not "
                           "merged into it.", code="trace_already_reviewed")
        trajectories.prepare(item, settings)  # refuse before replacing anything
        datasets.before_trajectory_delete(session, stored.id, principal.key_id, force=False)
        trajectories_repo.delete_trajectory(session, stored.id)
    outcome = trajectories.ingest(session, [item], settings, principal, raw_texts=lambda _: {0: raw},
                                  ids=None if stored is None else {0: stored.id})[0]
    if outcome.error is not None:
        if outcome.status == 409 and stored is None and not last_try:
            raise _Raced
        raise outcome.error
    return True


def _raw_text(spans: list[OtlpSpan]) -> str:
    """The spans as OTLP/JSON text (the ``json`` column keeps it as written)."""
    value = encode_spans(spans)
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value)  # ASCII escapes: values orjson refuses (lone surrogates, huge ints)
