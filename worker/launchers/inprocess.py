"""The in-process launcher: the trainer runs in the worker's own process, on one device.

Progress reports and the stop flag go straight through the job context; whatever the trainer raises
reaches the worker loop unchanged, which decides its permanence (``worker.context.is_permanent``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contract.job_config import DistillConfig
    from contract.rundir import TrainResult
    from contract.spans import DatasetRecord
    from worker.context import JobContext


def run_in_process(ctx: JobContext, config: DistillConfig, records: list[DatasetRecord]) -> TrainResult:
    from worker.training.trainer import run_training  # torch: imported only once a job runs

    return run_training(config, records, ctx.out_dir, progress=ctx.report_progress, should_stop=ctx.should_stop,
                        job_id=str(ctx.job_id))
