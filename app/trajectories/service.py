"""Ingestion rules: validate, normalize to canonical form, segment, deduplicate, store.

``prepare`` turns one request item into a row (or raises a problem for that item alone);
``ingest`` stores a list of prepared items with two multi-row statements and sorts out which
were new, which were replays of identical content (200) and which clash (409). The caller's
session commits; nothing here is acknowledged before that.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.auth import Principal
from app.config import Settings
from app.errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from app.trajectories import repository as repo
from app.trajectories.schemas import TrajectoryCreate, TrajectoryReceipt
from contract.complexity import compute_complexity
from contract.formats import FormatError, canonical_sha256, parse
from contract.pglimits import index_key_error, json_error
from contract.spans import Span, SpanKind, validate_spans
from contract.validation import pydantic_errors

# The request fields some format parser reads (the parsers check every string they keep and sanitize tool
# output); the rest of the request is checked for unstorable values here.
_PARSED_BY_FORMAT = frozenset({"messages", "conversations", "text", "history", "trajectory", "input", "output"})
_ENVELOPE = {"format", "source", "external_id", "teacher_model", "task", "task_type", "outcome",
             "reward", "tags", "metadata", "spans"}


def request_sha256(item: Any) -> str:
    """sha256 of the request as sorted compact JSON (integers beyond 64 bits fall back to the stdlib)."""
    try:
        data = orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        data = json.dumps(item, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode(
            "utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


class LimitExceeded(ValidationFailed):
    code = "limit_exceeded"
    title = "Limit exceeded"


def _limit(name: str, limit: int, actual: int, field: str) -> LimitExceeded:
    return LimitExceeded(
        f"{field} has {actual} {name}; the limit is {limit}. Nothing was truncated or stored.",
        limit={"name": name, "max": limit, "actual": actual},
        errors=[{"field": field, "code": "limit_exceeded", "message": f"at most {limit} {name}"}],
    )


@dataclass
class Prepared:
    row: dict[str, Any]  # the trajectory's columns (``repository.insert_trajectories``)
    spans: list[Span]
    span_source: str
    sanitized: int = 0  # never-trained characters replaced by U+FFFD (``contract.formats.base.sanitize``)


def prepare(item: Any, settings: Settings, *, raw: str | None = None, clean: bool = False) -> Prepared:
    """Validate and normalize one request item. Raises an ``AppError`` describing this item.

    ``raw``: the item's text as received (stored for ``original=true``; default: re-serialized).
    ``clean``: the item came from bytes that cannot hold unstorable text (``app.body.Parsed.clean``).
    """
    if not isinstance(item, dict):
        raise ValidationFailed("Each trajectory must be a JSON object.",
                               errors=[{"field": "body", "code": "type_error", "message": "expected an object"}])
    # The format's own fields are checked by its parser (every string it keeps, tool-call arguments);
    # what it ignores is kept only in the raw text, which the json column stores as received.
    unstorable = json_error({k: v for k, v in item.items() if k not in _PARSED_BY_FORMAT}, strings=not clean)
    if unstorable is not None:
        raise ValidationFailed("The trajectory holds a value that cannot be stored.", errors=[unstorable])
    try:
        body = TrajectoryCreate.model_validate(item)
    except ValidationError as exc:
        raise ValidationFailed("The trajectory is not valid.", errors=pydantic_errors(exc.errors())) from None
    too_wide = index_key_error({"source": body.source, "external_id": body.external_id}, "external_id")
    if too_wide is not None:
        raise ValidationFailed("source and external_id are too long together.", errors=[too_wide])

    raw_messages = body.messages if body.messages is not None else body.conversations
    if raw_messages is not None and len(raw_messages) > settings.max_messages:
        raise _limit("messages", settings.max_messages, len(raw_messages),
                     "messages" if body.messages is not None else "conversations")
    if len(body.tags) > settings.max_tags:
        raise _limit("tags", settings.max_tags, len(body.tags), "tags")
    metadata_bytes = len(orjson.dumps(body.metadata))
    if metadata_bytes > settings.max_metadata_bytes:
        raise _limit("bytes", settings.max_metadata_bytes, metadata_bytes, "metadata")

    payload = {k: v for k, v in item.items() if k not in _ENVELOPE}
    if body.format == "react" and "task" not in payload and body.task is not None:
        payload["task"] = body.task
    if body.format == "smolagents" and body.task is not None:
        payload.setdefault("task", body.task)
    try:
        parsed = parse(body.format, payload)
    except FormatError as exc:
        raise ValidationFailed(f"The {body.format} payload is not valid: {exc}", code="invalid_trajectory",
                               errors=exc.errors) from None

    messages = parsed.messages
    if len(messages) > settings.max_messages:
        raise _limit("messages", settings.max_messages, len(messages), "messages")
    total = 0
    for i, m in enumerate(messages):
        n = len(m["text"])
        if n > settings.max_message_chars:
            raise _limit("characters", settings.max_message_chars, n, f"messages[{i}]")
        total += n
    if total > settings.max_trajectory_chars:
        raise _limit("characters", settings.max_trajectory_chars, total, "messages")

    if body.spans is not None:
        if len(body.spans) > settings.max_spans:
            raise _limit("spans", settings.max_spans, len(body.spans), "spans")
        errors = validate_spans(messages, body.spans)
        if errors:
            raise ValidationFailed("The client spans are not valid.", code="invalid_spans", errors=errors)
        spans: list[Span] = [{"message": s["message"], "start": s["start"], "end": s["end"],
                              "kind": SpanKind(s["kind"])} for s in body.spans]
        span_source = "client"
    else:
        spans = parsed.spans
        span_source = "auto"

    complexity = compute_complexity(messages, spans)
    row = {
        "id": uuid.uuid4(),
        "source": body.source,
        "external_id": body.external_id,
        "format": body.format,
        "teacher_model": body.teacher_model,
        "task": body.task,
        "task_type": body.task_type,
        "outcome": body.outcome,
        "reward": body.reward,
        "tags": body.tags,
        "metadata_": body.metadata,
        "messages": messages,
        "tools": parsed.tools,
        "raw": raw if raw is not None else orjson.dumps(item).decode(),
        "content_sha256": canonical_sha256(messages),
        "request_sha256": request_sha256(item),
        "complexity": complexity,
        "complexity_score": float(complexity["score"]),
        "n_messages": len(messages),
        "status": "pending",
        "span_revision": 1,
    }
    return Prepared(row=row, spans=spans, span_source=span_source, sanitized=parsed.sanitized)


@dataclass
class Outcome:
    status: int
    receipt: TrajectoryReceipt | None = None
    error: AppError | None = None


def _receipt(row: Any, created: bool, n_spans: int, sanitized: int) -> TrajectoryReceipt:
    def get(key: str) -> Any:
        return row[key] if isinstance(row, dict) else getattr(row, key)

    return TrajectoryReceipt(
        id=get("id"), source=get("source"), external_id=get("external_id"), created=created,
        span_revision=get("span_revision"), n_messages=get("n_messages"),
        n_spans=n_spans, content_sha256=get("content_sha256"), sanitized=sanitized,
    )


def _source_not_allowed(source: str) -> Forbidden:
    return Forbidden(f"This API key may not write to source {source!r}.", code="source_not_allowed", source=source)


def ingest(session: Session, items: list[Any], settings: Settings, principal: Principal, *,
           raw_texts: Callable[[Collection[int]], dict[int, str]] | None = None, clean: bool = False,
           ids: dict[int, uuid.UUID] | None = None) -> list[Outcome]:
    """Store many items; one ``Outcome`` per item, in order. Invalid items do not stop the rest.

    ``raw_texts(indices)``: the items' texts as received, asked for once the valid items are known (so an
    item refused for its size never has its text copied); without it the items are re-serialized.

    A key bound to sources (``Principal.sources``) writes only to those: any other source is a 403
    for that item, before anything about the stored trajectories is looked at.

    ``ids``: the id to give item i (default: a new one), for a caller that replaces a trajectory it has just
    deleted in this transaction and keeps its id (``app.traces``).
    """
    outcomes: list[Outcome | None] = [None] * len(items)
    prepared: dict[int, Prepared] = {}
    sanitized: dict[int, int] = {}  # per valid item, replays and in-batch duplicates included
    first_of_key: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items):
        try:
            p = prepare(item, settings, raw="" if raw_texts is not None else None, clean=clean)
            if not principal.may_write(p.row["source"]):
                raise _source_not_allowed(p.row["source"])
        except AppError as err:
            outcomes[i] = Outcome(err.status, error=err)
            continue
        if ids and i in ids:
            p.row["id"] = ids[i]
        sanitized[i] = p.sanitized
        key = (p.row["source"], p.row["external_id"])
        if p.row["external_id"] is not None and key in first_of_key:
            continue  # a duplicate inside this batch; resolved against the first below
        if p.row["external_id"] is not None:
            first_of_key[key] = i
        prepared[i] = p

    if raw_texts is not None and prepared:
        for i, raw in raw_texts(prepared.keys()).items():
            prepared[i].row["raw"] = raw
    batch = list(prepared.values())
    inserted = repo.insert_trajectories(session, [p.row for p in batch], [p.spans for p in batch],
                                        [p.span_source for p in batch], principal.key_id)
    for i, p in prepared.items():
        if p.row["id"] in inserted:
            outcomes[i] = Outcome(201, receipt=_receipt(p.row, True, len(p.spans), p.sanitized))

    # Everything not inserted is a replay (same request hash) or a clash with stored content.
    pending = [i for i, o in enumerate(outcomes) if o is None]
    if pending:
        keys = set()
        hashes: dict[int, tuple[tuple[str, str], str]] = {}
        for i in pending:
            item = items[i]
            key = (item["source"], item["external_id"])
            keys.add(key)
            hashes[i] = (key, request_sha256(item))
        existing = repo.find_by_external_ids(session, list(keys))
        for i, (key, digest) in hashes.items():
            row = existing.get(key)
            if row is None:  # deleted concurrently; treat as a conflict the client can retry
                outcomes[i] = Outcome(409, error=Conflict("The trajectory changed concurrently; retry."))
            elif row.request_sha256 == digest:
                outcomes[i] = Outcome(200, receipt=_receipt(row, False, row.n_spans, sanitized.get(i, 0)))
            else:  # the stored trajectory's id only for a key that may read it
                shown: dict[str, Any] = {"existing_id": str(row.id)} if principal.may_read_trajectories() else {}
                outcomes[i] = Outcome(409, error=Conflict(
                    f"source {key[0]!r} already holds external_id {key[1]!r} with different content.",
                    code="external_id_conflict", **shown))
    return [o for o in outcomes if o is not None]


def get_or_404(session: Session, trajectory_id: uuid.UUID) -> Any:
    row = repo.get(session, trajectory_id)
    if row is None:
        raise NotFound(f"No trajectory {trajectory_id}.")
    return row
