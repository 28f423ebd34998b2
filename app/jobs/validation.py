"""Submit-time checks of ``POST /v1/jobs``: a job that would fail on its config fails before it is queued.

The body is ``{kind, dataset_id, priority, max_attempts}`` plus the kind's config at the top level
(``student_model``, ``teacher_model``, ``loss``, ``curriculum``, ``training``, ``resources`` for
``distill``; the ``EvaluateConfig`` fields for ``evaluate``; the ``CaptureConfig`` fields for ``capture``), or
that config under ``config``. In order:

1. shape: unknown keys and out-of-range values → 422 ``validation_error`` with each field's path;
2. model references (``app.jobs.models``): ``job:<id>`` (a succeeded distill job's model), a folder
   under ``settings.models_root`` (``DISTILLERY_MODELS_ROOT``, default ``<data dir>/models``), resolved
   with symlinks followed and required to stay inside it, or a hub id (``org/name``; from the local hub
   cache when ``HF_HUB_OFFLINE`` is set) → 422 ``model_path_not_allowed`` (``..``, absolute paths
   elsewhere, symlinks out), ``model_not_found`` or ``invalid_model_reference``, saying where models are
   looked up. Stored configs hold the resolved absolute path, which workers load without remote code;
3. tokenizers: when a teacher's KL is needed and both models are local, their ``tokenizer.json`` files
   are compared (torch-free) → 422 ``tokenizer_mismatch`` listing the ``differences``;
4. dataset: it must exist (``dataset_not_found``) and the split the job reads must have items
   (``empty_train_split`` for distill and capture; ``empty_eval_split`` … for evaluate);
5. offline teacher signal (``loss.teacher_signal: "offline"``): a succeeded capture job must match
   (``app.jobs.captures``) → 422 ``capture_not_found`` / ``capture_mismatch``; its folder is stored in
   ``loss.capture``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import ValidationFailed
from app.jobs import repository as repo
from app.jobs.models import resolve_model as resolve_model  # re-exported
from app.jobs.models import resolve_reference
from contract.job_config import CaptureConfig, DistillConfig, EvaluateConfig
from contract.validation import FieldError, field_path, pydantic_errors
from contract.vocab import compare_tokenizers

JobConfig = DistillConfig | EvaluateConfig | CaptureConfig
CONFIGS: dict[str, type[JobConfig]] = {"distill": DistillConfig, "evaluate": EvaluateConfig, "capture": CaptureConfig}


class JobEnvelope(BaseModel):
    """The queue fields of a submission (the rest is the kind's config)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["distill", "evaluate", "capture"] = Field(description="What the worker does.")
    dataset_id: uuid.UUID = Field(description="The dataset snapshot the job reads.")
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first; ties run oldest first.")
    max_attempts: int = Field(3, ge=1, le=20, description="Runs before the job is failed (a dead worker counts).")


ENVELOPE_KEYS = frozenset(JobEnvelope.model_fields)


class DistillJobCreate(DistillConfig):
    """A distill job as submitted (documentation shape: the envelope beside the config fields)."""

    kind: Literal["distill"]
    dataset_id: uuid.UUID
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first; ties run oldest first.")
    max_attempts: int = Field(3, ge=1, le=20, description="Runs before the job is failed.")


class EvaluateJobCreate(EvaluateConfig):
    """An evaluate job as submitted (documentation shape)."""

    kind: Literal["evaluate"]
    dataset_id: uuid.UUID
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first; ties run oldest first.")
    max_attempts: int = Field(3, ge=1, le=20, description="Runs before the job is failed.")


class CaptureJobCreate(CaptureConfig):
    """A capture job as submitted (documentation shape)."""

    kind: Literal["capture"]
    dataset_id: uuid.UUID
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first; ties run oldest first.")
    max_attempts: int = Field(3, ge=1, le=20, description="Runs before the job is failed.")


def openapi_components() -> dict[str, Any]:
    """OpenAPI schemas of the submission body: ``JobCreate`` (one of the two kinds, by ``kind``)."""
    from pydantic import TypeAdapter

    union = TypeAdapter(Annotated[DistillJobCreate | EvaluateJobCreate | CaptureJobCreate,
                                  Field(discriminator="kind")])
    schema = union.json_schema(ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = schema.pop("$defs", {})
    components["JobCreate"] = schema
    return components


@dataclass(frozen=True)
class ValidatedJob:
    kind: str
    dataset_id: uuid.UUID
    priority: int
    max_attempts: int
    config: dict[str, Any]  # the kind's config, defaults filled in, model paths resolved


def parse(body: Any) -> tuple[JobEnvelope, JobConfig, str]:
    """Split and validate a submission; returns (envelope, config, the field prefix of the config)."""
    if not isinstance(body, dict):
        raise ValidationFailed("The body must be a JSON object.",
                               errors=[{"field": "body", "code": "type_error", "message": "expected an object"}])
    envelope_part = {k: v for k, v in body.items() if k in ENVELOPE_KEYS}
    config_part: Any = {k: v for k, v in body.items() if k not in ENVELOPE_KEYS}
    prefix = ""
    if "config" in config_part:
        if len(config_part) > 1:
            others = sorted(k for k in config_part if k != "config")
            raise ValidationFailed(
                "Give the job's config at the top level or under 'config', not both.",
                errors=[{"field": k, "code": "extra_forbidden", "message": "config is given under 'config'"}
                        for k in others])
        config_part, prefix = config_part["config"], "config"
        if not isinstance(config_part, dict):
            raise ValidationFailed("'config' must be an object.",
                                   errors=[{"field": "config", "code": "type_error", "message": "expected an object"}])
    errors: list[FieldError] = []
    envelope = config = None
    try:
        envelope = JobEnvelope.model_validate(envelope_part)
    except ValidationError as exc:
        errors += pydantic_errors(exc.errors())
    kind = body.get("kind")
    if isinstance(kind, str) and kind in CONFIGS:
        try:
            config = CONFIGS[kind].model_validate(config_part)
        except ValidationError as exc:
            errors += pydantic_errors(exc.errors(), prefix)
    if errors or envelope is None or config is None:
        raise ValidationFailed("The job is not valid.", errors=errors)
    return envelope, config, prefix


def check_tokenizers(student: str, teacher: str, prefix: str) -> None:
    """Refuse KL between local models whose vocabularies differ (``contract.vocab``, torch-free)."""
    if not (Path(student).is_absolute() and Path(teacher).is_absolute()):
        return  # a hub model: checked by the worker, before any weights are loaded
    try:
        differences = compare_tokenizers(student, teacher)
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable tokenizer.json (a slow tokenizer): the worker checks with the loaded tokenizers
    if differences:
        field = field_path(("teacher_model",), prefix)
        raise ValidationFailed(
            "The teacher's tokenizer differs from the student's; KL distillation needs a shared vocabulary "
            "(train without a teacher signal, or pick a teacher of the same family).",
            code="tokenizer_mismatch",
            errors=[{"field": field, "code": "tokenizer_mismatch", "message": d} for d in differences],
            differences=differences,
        )


def check_dataset(session: Session, dataset_id: uuid.UUID, kind: str, config: JobConfig) -> None:
    counts = repo.dataset_split_counts(session, dataset_id)
    if counts is None:
        raise ValidationFailed(f"Dataset {dataset_id} does not exist.", code="dataset_not_found",
                               errors=[{"field": "dataset_id", "code": "dataset_not_found", "message": "not found"}])
    split = config.split if isinstance(config, EvaluateConfig) else "train"
    n = counts["train"] + counts["eval"] if split == "all" else counts[split]
    if n == 0:
        code = "empty_dataset" if split == "all" else f"empty_{split}_split"
        what = "has no items" if split == "all" else f"has no {split} items"
        raise ValidationFailed(f"Dataset {dataset_id} {what}; the {kind} job would have nothing to read.",
                               code=code, errors=[{"field": "dataset_id", "code": code, "message": what}],
                               counts=counts)


def validate_submission(session: Session, body: Any, settings: Settings) -> ValidatedJob:
    """Every submit-time check, cheapest first; raises ``ValidationFailed`` (422) with a stable code."""
    envelope, config, prefix = parse(body)
    student = resolve_reference(session, config.student_model, settings, field_path(("student_model",), prefix))
    teacher = None
    if config.teacher_model is not None:
        teacher = resolve_reference(session, config.teacher_model, settings, field_path(("teacher_model",), prefix))
    # KL to the teacher: distill with a teacher signal; evaluate whenever a teacher is named; capture always.
    needs_kl = not isinstance(config, DistillConfig) or config.loss.teacher_signal in ("online", "offline")
    if teacher is not None and needs_kl:
        check_tokenizers(student, teacher, prefix)
    # A local model whose logit transform the worker's losses do not know (contract.architectures, torch-free).
    from contract.architectures import unsupported_architecture

    for name, ref in (("student_model", student), ("teacher_model", teacher if needs_kl else None)):
        problem = unsupported_architecture(ref) if ref is not None and Path(ref).is_absolute() else None
        if problem:
            raise ValidationFailed(f"{name}: {problem}", code="unsupported_architecture", errors=[
                {"field": field_path((name,), prefix), "code": "unsupported_architecture", "message": problem}])
    check_dataset(session, envelope.dataset_id, envelope.kind, config)
    stored = config.model_dump(mode="json")
    stored["student_model"], stored["teacher_model"] = student, teacher
    if isinstance(config, DistillConfig) and config.loss.teacher_signal == "offline" and teacher is not None:
        from app.jobs.captures import resolve_capture

        stored["loss"]["capture"] = resolve_capture(session, settings, config, envelope.dataset_id, student, teacher,
                                                    prefix)
    return ValidatedJob(kind=envelope.kind, dataset_id=envelope.dataset_id, priority=envelope.priority,
                        max_attempts=envelope.max_attempts, config=stored)
