"""Annotation rules: revisions under If-Match, edit ops, review transitions, queue leases, stats.

Writes to a span set need ``If-Match`` with the current revision (missing → 428, stale → 412,
``*`` refused: it would defeat the check). A write is validated as a whole with
``validate_spans``, then stored as revision n+1 through a compare-and-set on the trajectory row,
so of two writers holding the same revision exactly one wins. A write equal to the current set
stores nothing (``created: false``). Only ``pending`` and ``in_review`` trajectories are editable:
an approved or rejected one must be reopened first (409 ``not_editable``), so an approval always
refers to the spans it saw.

Review transitions (``TRANSITIONS``)::

    pending   --start-->   in_review
    pending | in_review --approve--> approved
    pending | in_review --reject-->  rejected
    approved | rejected --reopen-->  in_review

Anything else is 409 ``invalid_transition`` naming the current status and the allowed actions.

Queue: a claim hands out the oldest ``pending`` trajectory that has no live lease and does not
change its review status (``start`` does). Only the key that claimed a lease may release,
complete or extend it (403 ``not_lease_holder``); an expired lease answers 409
``lease_expired``, an ended one 409 ``lease_ended``. Services never commit.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.annotations import repository as repo
from app.annotations.diff import diff_spans
from app.annotations.edits import EditError, apply_ops
from app.annotations.schemas import BulkFilter, ClaimRequest, EditOp
from app.annotations.stats import segmenter_quality
from app.config import Settings
from app.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    ServiceUnavailable,
    ValidationFailed,
)
from app.models import SpanRevision, Trajectory
from app.trajectories.service import LimitExceeded
from contract.complexity import compute_complexity
from contract.pglimits import parse_digits
from contract.spans import Span, SpanKind, validate_spans

TRANSITIONS: dict[str, dict[str, str]] = {
    "pending": {"start": "in_review", "approve": "approved", "reject": "rejected"},
    "in_review": {"approve": "approved", "reject": "rejected"},
    "approved": {"reopen": "in_review"},
    "rejected": {"reopen": "in_review"},
}
CLAIM_ATTEMPTS = 8


def allowed_actions(status: str) -> list[str]:
    return sorted(TRANSITIONS.get(status, {}))


def trajectory_or_404(session: Session, trajectory_id: uuid.UUID) -> Trajectory:
    row = repo.get_trajectory(session, trajectory_id)
    if row is None:
        raise NotFound(f"No trajectory {trajectory_id}.")
    return row


def revision_or_404(session: Session, trajectory_id: uuid.UUID, revision: int) -> SpanRevision:
    row = repo.get_revision(session, trajectory_id, revision)
    if row is None:
        trajectory_or_404(session, trajectory_id)
        raise NotFound(f"Trajectory {trajectory_id} has no span revision {revision}.", code="revision_not_found")
    return row


def current_revision(session: Session, trajectory_id: uuid.UUID) -> SpanRevision:
    """The current span revision, without loading the trajectory's messages."""
    state = repo.current_state(session, trajectory_id)
    if state is None:
        raise NotFound(f"No trajectory {trajectory_id}.")
    return revision_or_404(session, trajectory_id, state.span_revision)


# ---- If-Match -----------------------------------------------------------------------------------

def parse_if_match(value: str | None) -> set[int]:
    """Revisions named by an ``If-Match`` header (``"3"``, or a list ``"3", "4"``)."""
    if value is None or not value.strip():
        raise PreconditionRequired("Send If-Match with the span revision you edited (the ETag of GET …/spans).",
                                   code="precondition_required")
    if value.strip() == "*":
        raise PreconditionRequired("If-Match: * is not accepted here; name the revision you edited.",
                                   code="precondition_required")
    revisions = set()
    for token in value.split(","):
        token = token.strip()
        if token.startswith("W/"):
            continue  # weak tags never match under the strong comparison If-Match requires
        token = token.strip('"')
        revision = parse_digits(token)
        if revision is None:
            raise ValidationFailed("If-Match must be a span revision ETag such as \"3\".", code="invalid_if_match",
                                   errors=[{"field": "If-Match", "code": "invalid",
                                            "message": f"not a revision: {value!r}"}])
        revisions.add(revision)
    return revisions


def _stale(current: int, sent: set[int] | int) -> PreconditionFailed:
    shown = sent if isinstance(sent, int) else ", ".join(str(r) for r in sorted(sent)) or "none"
    return PreconditionFailed(
        f"The spans are at revision {current}; you sent If-Match {shown}. Re-read them and apply your edit again.",
        current_revision=current, headers={"ETag": f'"{current}"'})


def _not_editable(status: str) -> Conflict:
    return Conflict(f"The trajectory is {status}; reopen it (POST …/review {{\"action\": \"reopen\"}}) to edit spans.",
                    code="not_editable", current_status=status, allowed_actions=allowed_actions(status))


# ---- writes -------------------------------------------------------------------------------------

def _normalize(spans: list[Any]) -> list[Span]:
    """Only the span keys of valid spans (a client may send more; they are not stored)."""
    return [{"message": s["message"], "start": s["start"], "end": s["end"], "kind": SpanKind(s["kind"])}
            for s in spans]


def _write(session: Session, row: Trajectory, expected: int, spans: list[Span], author: str,
           reason: str | None) -> tuple[SpanRevision | Any, bool]:
    current = revision_or_404(session, row.id, expected)
    if spans == _normalize(current.spans):
        return current, False
    if not repo.advance_revision(session, row.id, expected, compute_complexity(row.messages, spans)):
        state = repo.current_state(session, row.id)
        if state is None:
            raise NotFound(f"No trajectory {row.id}.")
        if state.status not in repo.EDITABLE_STATUSES:
            raise _not_editable(state.status)
        raise _stale(state.span_revision, expected)
    return repo.insert_revision(session, row.id, expected + 1, spans, author, reason), True


def _precheck(session: Session, trajectory_id: uuid.UUID, if_match: str | None) -> tuple[Trajectory, int]:
    """The trajectory and the revision the client holds, once it is known to be current and editable."""
    row = trajectory_or_404(session, trajectory_id)
    sent = parse_if_match(if_match)
    if row.span_revision not in sent:
        raise _stale(row.span_revision, sent)
    if row.status not in repo.EDITABLE_STATUSES:
        raise _not_editable(row.status)
    return row, row.span_revision


def replace_spans(session: Session, settings: Settings, trajectory_id: uuid.UUID, if_match: str | None,
                  spans: list[Any], author: str, reason: str | None) -> tuple[Any, bool]:
    row, expected = _precheck(session, trajectory_id, if_match)
    if len(spans) > settings.max_spans:
        raise LimitExceeded(f"spans has {len(spans)} spans; the limit is {settings.max_spans}.",
                            limit={"name": "spans", "max": settings.max_spans, "actual": len(spans)},
                            errors=[{"field": "spans", "code": "limit_exceeded",
                                     "message": f"at most {settings.max_spans} spans"}])
    errors = validate_spans(row.messages, spans)
    if errors:
        raise ValidationFailed("The spans are not valid; nothing was stored.", code="invalid_spans", errors=errors)
    return _write(session, row, expected, _normalize(spans), author, reason)


def edit_spans(session: Session, settings: Settings, trajectory_id: uuid.UUID, if_match: str | None,
               ops: list[EditOp], author: str, reason: str | None) -> tuple[Any, bool]:
    row, expected = _precheck(session, trajectory_id, if_match)
    current = revision_or_404(session, row.id, expected)
    try:
        spans, origin = apply_ops(row.messages, _normalize(current.spans), ops)
    except EditError as exc:
        raise ValidationFailed("An edit operation cannot be applied; nothing was stored.", code="invalid_edit",
                               errors=[exc.error]) from None
    if len(spans) > settings.max_spans:
        raise LimitExceeded(f"The edits leave {len(spans)} spans; the limit is {settings.max_spans}.",
                            limit={"name": "spans", "max": settings.max_spans, "actual": len(spans)})
    errors = validate_spans(row.messages, spans)
    if errors:
        for e in errors:  # name the op that produced the offending span (or the one it overlaps)
            index = e["field"].split("]")[0].removeprefix("spans[")
            if not index.isdigit():
                continue
            near = [int(index), int(index) - 1] if e["code"] in ("overlap", "not_sorted") else [int(index)]
            producer = next((origin[i] for i in near if i >= 0 and origin[i] is not None), None)
            if producer is not None:
                e["op"] = f"ops[{producer}]"
        raise ValidationFailed("The span set the edits produce is not valid; nothing was stored.",
                               code="invalid_spans", errors=errors)
    return _write(session, row, expected, spans, author, reason)


def revisions_diff(session: Session, trajectory_id: uuid.UUID, from_rev: int | None, to_rev: int | None
                   ) -> dict[str, Any]:
    state = repo.current_state(session, trajectory_id)
    if state is None:
        raise NotFound(f"No trajectory {trajectory_id}.")
    a = from_rev if from_rev is not None else 1
    b = to_rev if to_rev is not None else state.span_revision
    old, new = revision_or_404(session, trajectory_id, a), revision_or_404(session, trajectory_id, b)
    return {"trajectory_id": trajectory_id, "from_revision": a, "to_revision": b,
            **diff_spans(old.spans, new.spans)}


# ---- review -------------------------------------------------------------------------------------

def review(session: Session, trajectory_id: uuid.UUID, action: str, note: str | None, actor: str,
           if_match: str | None) -> dict[str, Any]:
    """Apply one transition under a row lock. ``If-Match`` is optional: when sent, the action
    applies only if the spans are still at that revision (an approval of what the reviewer saw)."""
    locked = repo.lock_trajectory(session, trajectory_id)
    if locked is None:
        raise NotFound(f"No trajectory {trajectory_id}.")
    if if_match is not None:
        sent = parse_if_match(if_match)
        if locked.span_revision not in sent:
            raise _stale(locked.span_revision, sent)
    target = TRANSITIONS.get(locked.status, {}).get(action)
    if target is None:
        allowed = allowed_actions(locked.status)
        raise Conflict(f"Cannot {action} a trajectory that is {locked.status}; allowed: "
                       f"{', '.join(allowed) or 'none'}.", code="invalid_transition",
                       current_status=locked.status, action=action, allowed_actions=allowed)
    updated = repo.set_review(session, trajectory_id, action=action, from_status=locked.status, to_status=target,
                              actor=actor, note=note, span_revision=locked.span_revision)
    return {"trajectory_id": trajectory_id, "previous_status": locked.status, **updated._mapping,
            "allowed_actions": allowed_actions(target)}


def bulk_review(session: Session, action: str, f: BulkFilter, note: str | None, actor: str, dry_run: bool
                ) -> dict[str, Any]:
    narrowing = f.model_dump(exclude={"status"}, exclude_none=True)
    if not narrowing:
        raise ValidationFailed("A bulk review needs a filter beyond status (e.g. source).", code="filter_required",
                               errors=[{"field": "filter", "code": "filter_required",
                                        "message": "set at least one of source, task_type, teacher_model, outcome, "
                                                   "tags, format, created_after, created_before"}])
    matched, leased = repo.bulk_counts(session, f)
    changed = 0
    if not dry_run:
        to_status = TRANSITIONS["in_review"][action]
        changed = repo.bulk_review(session, f, action=action, to_status=to_status, actor=actor, note=note)
    return {"dry_run": dry_run, "matched": matched, "changed": changed, "skipped_leased": leased,
            "would_change": matched - leased}


# ---- queue --------------------------------------------------------------------------------------

def claim(session: Session, body: ClaimRequest, holder: str) -> dict[str, Any] | None:
    for _ in range(CLAIM_ATTEMPTS):
        candidate, won = repo.claim(session, holder, body.lease_seconds, source=body.source,
                                    task_type=body.task_type, format=body.format)
        if candidate is None:
            return None
        if won:
            lease = repo.open_lease_for(session, candidate)
            assert lease is not None
            return {"lease": _lease(lease), "trajectory": repo.claimed_trajectory(session, candidate)._mapping}
    raise ServiceUnavailable("Too many annotators claimed at once; retry.", code="queue_contention",
                             headers={"Retry-After": "1"})


def _lease(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {"lease_id": m["id"], **{k: m[k] for k in ("trajectory_id", "holder_key_id", "claimed_at",
                                                      "expires_at", "ended_at", "end_reason")}}


def _held_lease(session: Session, lease_id: uuid.UUID, holder: str) -> Any:
    row = repo.get_lease(session, lease_id, lock=True)
    if row is None:
        raise NotFound(f"No lease {lease_id}.", code="lease_not_found")
    if row.holder_key_id != holder:
        raise Forbidden("This lease belongs to another API key.", code="not_lease_holder")
    if row.end_reason == "expired" or (row.ended_at is None and row.expired):
        raise Conflict(f"The lease expired at {row.expires_at.isoformat()}; claim again.", code="lease_expired",
                       expires_at=row.expires_at.isoformat())
    if row.ended_at is not None:
        raise Conflict(f"The lease was already {row.end_reason}.", code="lease_ended", end_reason=row.end_reason)
    return row


def end_lease(session: Session, lease_id: uuid.UUID, holder: str, reason: str) -> dict[str, Any]:
    _held_lease(session, lease_id, holder)
    return _lease(repo.end_lease(session, lease_id, reason))


def extend_lease(session: Session, lease_id: uuid.UUID, holder: str, seconds: int) -> dict[str, Any]:
    _held_lease(session, lease_id, holder)
    return _lease(repo.extend_lease(session, lease_id, seconds))


# ---- stats --------------------------------------------------------------------------------------

def annotation_stats(session: Session, source: str | None, format: str | None) -> dict[str, Any]:
    return segmenter_quality(repo.approved_auto_vs_final(session, source=source, format=format))
