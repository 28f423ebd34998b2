"""Finding the capture an offline distill job trains against (DESIGN §5, offline teacher signal).

A capture is keyed by (dataset content hash, teacher, tokenizer + chat template, max_seq_len, temperature,
tool-call syntax);
k is whatever the capture stored. The distill job names one (``loss.capture: "job:<id>"``) or leaves it to
the API, which picks the newest succeeded capture that matches. No match is refused at submit time with 422
``capture_not_found`` (rather than a job that waits): the answer says what to capture, and a capture job
is cheap to submit first. A named capture that does not match is 422 ``capture_mismatch`` with the
differences. The stored config holds the capture's folder, which the worker reads and checks again.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import ValidationFailed
from app.jobs import repository as repo
from contract.capture import CAPTURE_DIR, tokenizer_fingerprint
from contract.job_config import DistillConfig
from contract.validation import field_path


def wanted_key(config: DistillConfig, student: str, teacher: str) -> dict[str, Any]:
    """What a capture must have been made with to serve this distill job."""
    return {"teacher_model": teacher, "student_model": student, "max_seq_len": config.training.max_seq_len,
            "temperature": config.loss.temperature, "tool_call_syntax": config.training.tool_call_syntax}


def differences(row: Any, want: dict[str, Any]) -> list[str]:
    """Why a capture job does not serve the wanted key (empty when it does)."""
    cfg, key = row.config or {}, (row.result or {}).get("key") or {}
    # A capture stored before tool_call_syntax existed rendered natively (the default then and now).
    cfg = {"tool_call_syntax": "native", **cfg}
    out = [f"{name}: captured with {cfg.get(name)!r}, this job has {want[name]!r}"
           for name in ("teacher_model", "max_seq_len", "temperature", "tool_call_syntax")
           if cfg.get(name) != want[name]]
    # The tokenizer and template: by their files' fingerprint, by path when either cannot be read.
    mine, theirs = tokenizer_fingerprint(want["student_model"]), key.get("tokenizer_sha256")
    same = mine == theirs if mine is not None and theirs is not None else cfg.get("student_model") == want[
        "student_model"]
    if not same:
        out.append(f"tokenizer and template: captured with {cfg.get('student_model')!r}'s, which differ from "
                   f"{want['student_model']!r}'s")
    return out


def resolve_capture(session: Session, settings: Settings, config: DistillConfig, dataset_id: uuid.UUID,
                    student: str, teacher: str, prefix: str) -> str:
    """The folder of the capture this offline distill job uses; 422 when none matches."""
    field = field_path(("loss", "capture"), prefix)
    content = repo.dataset_content_hash(session, dataset_id)
    if content is None:
        return ""  # no dataset: check_dataset answers dataset_not_found
    want = wanted_key(config, student, teacher)
    named = config.loss.capture
    if named is not None:
        job_id = _job_ref(named, field)
        rows = repo.succeeded_captures(session, content, job_id)
        if not rows:
            raise ValidationFailed(
                f"{named} is not a succeeded capture job over this dataset's content.", code="capture_mismatch",
                errors=[{"field": field, "code": "capture_mismatch", "message": "no such succeeded capture"}])
        problems = differences(rows[0], want)
        if problems:
            raise ValidationFailed(f"{named} was captured for another setting.", code="capture_mismatch",
                                   errors=[{"field": field, "code": "capture_mismatch", "message": p}
                                           for p in problems], differences=problems)
        return str(settings.job_dir(rows[0].id) / CAPTURE_DIR)
    for row in repo.succeeded_captures(session, content):
        if not differences(row, want):
            return str(settings.job_dir(row.id) / CAPTURE_DIR)
    raise ValidationFailed(
        "No succeeded capture matches this offline distill job: submit a capture job on this dataset with the "
        "same teacher_model, student_model, max_seq_len (training.max_seq_len), temperature "
        "(loss.temperature) and tool_call_syntax (training.tool_call_syntax), wait for it to succeed, then "
        "submit this job again.",
        code="capture_not_found", errors=[{"field": field, "code": "capture_not_found", "message": "no capture"}],
        wanted={**want, "dataset_content_sha256": content})


def _job_ref(ref: str, field: str) -> uuid.UUID:
    try:
        if ref.startswith("job:"):
            return uuid.UUID(ref[4:])
    except ValueError:
        pass
    raise ValidationFailed("loss.capture must be 'job:<id>' of a capture job.", code="invalid_capture_reference",
                           errors=[{"field": field, "code": "invalid_capture_reference", "message": ref}])
