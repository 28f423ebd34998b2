"""What a worker does with each kind of job: the handler registry and the built-in kinds.

A handler is ``handler(ctx: worker.context.JobContext) -> dict`` (the contract is in
``worker.context``). ``distill`` trains the student with the launcher its resources ask for
(``worker.launchers``); ``evaluate`` scores a model on one split; ``capture`` stores a teacher's top-k
signal for offline distill jobs (``worker.training.capture``). A job whose stored config is
invalid fails at once (pydantic's ``ValidationError`` is permanent, see ``worker.context.is_permanent``).

More kinds can be added by plugins: ``DISTILLERY_WORKER_PLUGINS="pkg.module,pkg.other:setup"``
imports each module (its ``@register`` decorators run) and calls ``setup()`` when named.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from contract.job_config import DistillConfig, EvaluateConfig
from contract.rundir import RunDir
from worker.context import JobContext
from worker.fence import discard
from worker.launchers import launch

Handler = Callable[[JobContext], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}
M = TypeVar("M", bound=BaseModel)


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


def _config(ctx: JobContext, model: type[M]) -> M:
    # dataset_id is the job's own column (the API stores it beside the config), not a config field.
    return model.model_validate({k: v for k, v in ctx.config.items() if k != "dataset_id"})


@register("distill")
def distill(ctx: JobContext) -> dict[str, Any]:
    """Train the student on the job's dataset; the run's files land in ``ctx.out_dir``."""
    records = ctx.dataset_records()
    config = _config(ctx, DistillConfig)
    ctx.log(f"training on {len(records)} records", data={"attempt": ctx.attempt, "gpus": config.resources.gpus})
    from worker.training.views import write_for_job  # transformers: imported only once a job runs

    write_for_job(ctx, config.student_model, config.training.max_seq_len, records, config.training.tool_call_syntax)
    return launch(ctx, config, records).job_result(ctx.out_dir)


@register("evaluate")
def evaluate(ctx: JobContext) -> dict[str, Any]:
    """Score a model on a split of the job's dataset; writes ``eval_report.json`` in ``ctx.out_dir`` (assembled
    in the attempt's scratch folder and promoted by its fence)."""
    records = ctx.dataset_records()
    config = _config(ctx, EvaluateConfig)
    from worker.training.evaluate import run_evaluation  # torch: imported only once a job runs

    ctx.log(f"evaluating {config.student_model} on the {config.split} split", data={"records": len(records)})
    ctx.report_progress({"step": 0, "total": 1, "phase": "evaluating"})
    scratch = ctx.fence.scratch(ctx.out_dir / "evaluate")
    try:
        report = run_evaluation(config, records, scratch)
        ctx.fence.promote(RunDir(scratch).eval_report, ctx.run_dir.eval_report)
    finally:
        discard(scratch)
    ctx.report_progress({"step": 1, "total": 1, "phase": "done"})
    return {
        "status": "completed",
        "metrics": report["metrics"],
        "skipped": report["skipped"],
        "paths": {"out_dir": str(ctx.out_dir), "eval_report": str(ctx.run_dir.eval_report)},
    }


@register("capture")
def capture(ctx: JobContext) -> dict[str, Any]:
    """Store the teacher's top-k signal for the dataset's train split under ``out_dir/capture`` (shards promoted
    by the attempt's fence; a resumed attempt skips finished shards), for offline distill jobs to reuse."""
    from contract.capture import CAPTURE_DIR
    from contract.job_config import CaptureConfig
    from worker.training.capture_launch import run_capture_job  # torch: imported only once a job runs

    records = ctx.dataset_records()
    config = _config(ctx, CaptureConfig)
    ctx.log(f"capturing top-{config.top_k} of {config.teacher_model}", data={"records": len(records),
                                                                              "processes": config.resources.gpus})
    result = run_capture_job(ctx, config, records)
    manifest = result.get("manifest") or {}
    return {**result, "capture_dir": str(ctx.out_dir / CAPTURE_DIR),
            "key": {k: manifest.get(k) for k in ("records_sha256", "teacher_model", "tokenizer_sha256", "top_k",
                                                 "temperature", "max_seq_len")}}
