"""Request and response shapes for ``/v1/datasets``.

``DatasetCreate`` is the whole recipe of a snapshot: which trajectories (``filter`` + ``statuses``),
how duplicates and over-represented tasks are thinned (``dedupe``, ``max_per_task``) and how the
split is drawn (``eval_fraction``, ``seed``). It is stored with the snapshot, so a dataset always
says how it was made.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.trajectories.schemas import Format, Outcome, Status
from contract.pglimits import INT4_MAX

Split = Literal["train", "eval"]
ExportFormat = Literal["jsonl", "openai"]
ExportSplit = Literal["train", "eval", "all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetFilter(_Strict):
    """Which trajectories a snapshot takes; every field given must match (AND)."""

    source: str | None = None
    teacher_model: str | None = None
    task_type: str | None = None
    outcome: Outcome | None = None
    format: Format | None = None
    reward_min: float | None = Field(None, allow_inf_nan=False,
                                     description="Inclusive. With a reward bound, trajectories without a reward "
                                                 "are left out.")
    reward_max: float | None = Field(None, allow_inf_nan=False, description="Inclusive.")
    tags: list[str] | None = Field(None, max_length=64, description="All required.")
    complexity_min: float | None = Field(None, allow_inf_nan=False, description="complexity_score, inclusive.")
    complexity_max: float | None = Field(None, allow_inf_nan=False, description="complexity_score, inclusive.")
    created_after: datetime | None = Field(None, description="Inclusive.")
    created_before: datetime | None = Field(None, description="Exclusive.")

    @model_validator(mode="after")
    def _ranges(self) -> DatasetFilter:
        for low, high in (("reward_min", "reward_max"), ("complexity_min", "complexity_max"),
                          ("created_after", "created_before")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} must not be greater than {high}")
        return self


class DatasetCreate(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "weather-v1", "description": "Approved weather runs, deduplicated",
        "filter": {"task_type": "weather", "outcome": "success", "reward_min": 0.5},
        "eval_fraction": 0.1, "seed": 0, "dedupe": True, "max_per_task": 5,
    }]})

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    filter: DatasetFilter = Field(default_factory=lambda: DatasetFilter.model_validate({}))
    statuses: list[Status] = Field(["approved"], min_length=1,
                                   description="Review statuses taken; default approved only.")
    eval_fraction: float = Field(0.1, ge=0, le=0.5, description="Expected share of the eval split.")
    seed: int = Field(0, ge=-(2**63), lt=2**63, description="Split seed: same seed, same split.")
    dedupe: bool = Field(False, description="Drop exact duplicates (same content_sha256), keeping the oldest.")
    max_per_task: int | None = Field(
        None, ge=1, le=INT4_MAX, description="Keep at most N trajectories per distinct task text, the oldest first "
                                "(after dedupe). Trajectories without a task are not capped.")


class DatasetCounts(BaseModel):
    items: int
    train: int
    eval: int


class DatasetRead(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    created_at: datetime
    created_by: str | None
    filter: dict[str, Any] = Field(description="The filter as given (unset fields omitted).")
    statuses: list[str]
    eval_fraction: float
    seed: int
    dedupe: bool
    max_per_task: int | None
    counts: DatasetCounts
    content_sha256: str = Field(description="sha256 over the sorted lines "
                                            "'{trajectory_id}\\t{span_revision}\\t{content_sha256}\\t{split}\\n'.")
    stats: dict[str, Any]
    n_deleted_trajectories: int = Field(
        0, description="Trajectories deleted (forced) since the snapshot; their items and content remain.")


class DatasetPage(BaseModel):
    items: list[DatasetRead]
    next_cursor: str | None


class DatasetItemRead(BaseModel):
    position: int
    trajectory_id: uuid.UUID
    span_revision: int
    split: Split
    content_sha256: str
    complexity_score: float
    complexity: float = Field(description="Normalized within the dataset: 0 = simplest, 1 = most complex.")
    trajectory_deleted: bool = Field(description="The trajectory was deleted after the snapshot (tombstone).")


class DatasetItemPage(BaseModel):
    items: list[DatasetItemRead]
    next_cursor: str | None
