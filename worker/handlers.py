"""What a worker does with each kind of job: a registry of handlers and the context they get.

A handler is ``handler(ctx: JobContext) -> dict``; the dict is stored as the job's ``result``.
It must call ``ctx.should_stop()`` regularly (the trainer does so every step) and, when that
turns True, save what it has (a checkpoint) and return ``{"status": "stopped", ...}``: the worker
then cancels the job or hands it back, depending on why it stopped. A job that runs again (after
a hand-back or a dead worker) gets the same ``out_dir`` and should resume from what it finds
there. Raising ``PermanentJobError`` fails the job at once; any other exception is retried.

More kinds can be added by plugins: ``DISTILLERY_WORKER_PLUGINS="pkg.module,pkg.other:setup"``
imports each module (its ``@register`` decorators run) and calls ``setup()`` when named.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config import Settings

Handler = Callable[["JobContext"], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


class PermanentJobError(Exception):
    """A failure that retrying cannot fix (bad config, missing dataset): the job fails at once."""


@dataclass
class JobContext:
    job_id: uuid.UUID
    kind: str
    config: dict[str, Any]
    attempt: int
    max_attempts: int
    dataset_id: uuid.UUID | None
    out_dir: Path
    settings: Settings
    _report_progress: Callable[[dict[str, Any]], None] = field(repr=False)
    _log: Callable[[str, str, dict[str, Any] | None], None] = field(repr=False)
    _should_stop: Callable[[], bool] = field(repr=False)

    def report_progress(self, progress: dict[str, Any]) -> None:
        """Store the job's progress ({step, total, tokens_per_s, eta_s, ...}) and a progress event."""
        self._report_progress(progress)

    def log(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        """A line in the job's event log (and the worker's log)."""
        self._log(message, level, data)

    def should_stop(self) -> bool:
        """True once the job must stop: cancel requested, worker shutting down, or lease lost."""
        return self._should_stop()


def register(kind: str) -> Callable[[Handler], Handler]:
    """Decorator: ``@register("distill")`` makes the function the handler of that job kind."""

    def deco(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return deco


def load_plugins(spec: str | None) -> None:
    """Import ``module`` / ``module:setup`` entries (comma-separated), calling each named setup()."""
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        module_name, _, attr = item.partition(":")
        module = importlib.import_module(module_name)
        if attr:
            getattr(module, attr)()


# -- distill -------------------------------------------------------------------------------------------------


def load_dataset_records(ctx: JobContext) -> list[dict[str, Any]]:
    """The job's dataset records (CONTRACTS "Dataset record"), from its JSONL export.

    Stand-in until datasets exist: reads ``data_dir/datasets/{dataset_id}.jsonl``.
    """
    dataset_id = ctx.dataset_id or ctx.config.get("dataset_id")
    if not dataset_id:
        raise PermanentJobError("a distill job needs a dataset_id")
    path = ctx.settings.data_dir / "datasets" / f"{dataset_id}.jsonl"
    if not path.is_file():
        raise PermanentJobError(f"dataset {dataset_id} not found (no export at {path})")
    with path.open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    if not records:
        raise PermanentJobError(f"dataset {dataset_id} is empty ({path})")
    return records


@register("distill")
def distill(ctx: JobContext) -> dict[str, Any]:
    from pydantic import ValidationError

    from app.jobs.schemas import DistillConfig

    records = load_dataset_records(ctx)
    try:
        config = DistillConfig.model_validate({k: v for k, v in ctx.config.items() if k != "dataset_id"})
    except ValidationError as exc:
        raise PermanentJobError(f"invalid distill config: {exc}") from exc
    from worker.training.recipe import run_training  # torch: imported only once the job can run

    ctx.log(f"training on {len(records)} records", data={"attempt": ctx.attempt})
    result = run_training(config, records, ctx.out_dir, progress=ctx.report_progress,
                          should_stop=ctx.should_stop, job_id=str(ctx.job_id))

    def rel(path: Path | None) -> str | None:
        return str(path) if path is not None else None

    return {
        "status": result.status,
        "steps": result.steps,
        "total_steps": result.total_steps,
        "resumed_from_step": result.resumed_from_step,
        "final_metrics": result.final_metrics,
        "skipped": result.skipped,
        "eval_report": result.eval_report,
        "paths": {
            "out_dir": rel(result.out_dir),
            "final_model": rel(result.final_dir),
            "checkpoint": rel(result.checkpoint_dir),
            "metrics": rel(result.metrics_path),
            "eval_report": rel(result.eval_report_path),
            "plot": rel(result.plot_path),
        },
    }
