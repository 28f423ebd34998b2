"""How a distill job's training runs: in this process (one device), or under torchrun when
``resources.gpus > 1``. Every launcher takes the job context, its config and its records, and returns
a ``contract.rundir.TrainResult`` (status "completed" or "stopped"); errors keep their permanence
(``worker.context.is_permanent``) whichever launcher ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.launchers.inprocess import run_in_process
from worker.launchers.torchrun import run_torchrun

if TYPE_CHECKING:
    from contract.job_config import DistillConfig
    from contract.rundir import TrainResult
    from contract.spans import DatasetRecord
    from worker.context import JobContext

__all__ = ["launch", "run_in_process", "run_torchrun"]


def launch(ctx: JobContext, config: DistillConfig, records: list[DatasetRecord]) -> TrainResult:
    """Train with the launcher the job's resources ask for."""
    if config.resources.gpus > 1:
        return run_torchrun(ctx, config, records)
    return run_in_process(ctx, config, records)
