"""What the ``distill`` and ``evaluate`` handlers do once they hold the job's dataset records.

``run_distill`` trains in this process (one device), or under torchrun when ``resources.gpus > 1``
(see ``worker.torchrun``); either way the run's files land in ``ctx.out_dir`` (``data_dir/jobs/{id}``:
metrics.jsonl, eval_before.json, eval_report.json, loss_curves.png, checkpoints/step-N/, final/),
which the API lists and serves. ``run_evaluate`` scores a model on one split and writes
``eval_report.json`` there. Both return the dict stored as the job's ``result``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.context import JobContext, PermanentJobError


def _config(ctx: JobContext, model: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate({k: v for k, v in ctx.config.items() if k != "dataset_id"})
    except ValidationError as exc:
        raise PermanentJobError(f"invalid {ctx.kind} config: {exc}") from exc


def run_distill(ctx: JobContext, records: list[dict[str, Any]]) -> dict[str, Any]:
    from contract.job_config import DistillConfig

    config = _config(ctx, DistillConfig)
    ctx.log(f"training on {len(records)} records", data={"attempt": ctx.attempt, "gpus": config.resources.gpus})
    if config.resources.gpus > 1:
        from worker.torchrun import run_distributed

        out = run_distributed(ctx, config, records)
        if out.get("status") != "completed":
            return out
        return _distill_result(
            ctx, status=out["status"], steps=out["steps"], total_steps=out["total_steps"],
            resumed_from_step=out.get("resumed_from_step"), final_metrics=out.get("final_metrics") or {},
            skipped=out.get("skipped") or {}, eval_report=None, final_dir=out.get("final_dir"),
            checkpoint_dir=out.get("checkpoint_dir"), eval_report_path=out.get("eval_report_path"),
            plot_path=out.get("plot_path"),
        )
    from worker.training.recipe import run_training  # torch: imported only once the job can run

    result = run_training(config, records, ctx.out_dir, progress=ctx.report_progress,
                          should_stop=ctx.should_stop, job_id=str(ctx.job_id))
    return _distill_result(
        ctx, status=result.status, steps=result.steps, total_steps=result.total_steps,
        resumed_from_step=result.resumed_from_step, final_metrics=result.final_metrics, skipped=result.skipped,
        eval_report=result.eval_report, final_dir=result.final_dir, checkpoint_dir=result.checkpoint_dir,
        eval_report_path=result.eval_report_path, plot_path=result.plot_path,
    )


def _distill_result(ctx: JobContext, *, status: str, steps: int, total_steps: int, resumed_from_step: int | None,
                    final_metrics: dict[str, Any], skipped: dict[str, int], eval_report: dict[str, Any] | None,
                    final_dir: Any, checkpoint_dir: Any, eval_report_path: Any, plot_path: Any) -> dict[str, Any]:
    """The stored result; paths are absolute on the worker (the API serves them from data_dir/jobs/{id})."""

    def path(value: Any) -> str | None:
        return str(value) if value is not None else None

    if eval_report is None and eval_report_path is not None and Path(eval_report_path).is_file():
        eval_report = json.loads(Path(eval_report_path).read_text())
    metrics_path = ctx.out_dir / "metrics.jsonl"
    return {
        "status": status,
        "steps": steps,
        "total_steps": total_steps,
        "resumed_from_step": resumed_from_step,
        "final_metrics": final_metrics,
        "skipped": skipped,
        "eval_report": eval_report,
        "paths": {
            "out_dir": str(ctx.out_dir),
            "final_model": path(final_dir),
            "checkpoint": path(checkpoint_dir),
            "metrics": str(metrics_path) if metrics_path.exists() else None,
            "eval_report": path(eval_report_path),
            "plot": path(plot_path),
        },
    }


def run_evaluate(ctx: JobContext, records: list[dict[str, Any]]) -> dict[str, Any]:
    from contract.job_config import EvaluateConfig

    config = _config(ctx, EvaluateConfig)
    from worker.training.evaluate import run_evaluation  # torch

    ctx.log(f"evaluating {config.student_model} on the {config.split} split", data={"records": len(records)})
    ctx.report_progress({"step": 0, "total": 1, "phase": "evaluating"})
    try:
        report = run_evaluation(config, records, ctx.out_dir)
    except ValueError as exc:  # an incompatible teacher, nothing to score: retrying cannot help
        raise PermanentJobError(str(exc)) from exc
    ctx.report_progress({"step": 1, "total": 1, "phase": "done"})
    return {
        "status": "completed",
        "metrics": report["metrics"],
        "skipped": report["skipped"],
        "paths": {"out_dir": str(ctx.out_dir), "eval_report": str(ctx.out_dir / "eval_report.json")},
    }
