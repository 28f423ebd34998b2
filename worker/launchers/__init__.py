"""How a distill job's training runs: in this process (one device), under torchrun on this machine
(``resources.gpus > 1``), or on a Slurm cluster (``resources.nodes > 1``, or ``launcher: "slurm"``).

``resources.launcher`` picks one explicitly; ``"auto"`` (the default) follows the resources as above
(``choose_launcher``). Every launcher takes the job context, its config and its records, and returns a
``contract.rundir.TrainResult`` (status "completed" or "stopped"); errors keep their permanence
(``worker.context.is_permanent``) whichever launcher ran.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from worker.launchers.inprocess import run_in_process
from worker.launchers.slurm import run_slurm
from worker.launchers.torchrun import run_torchrun

if TYPE_CHECKING:
    from contract.job_config import DistillConfig, ResourcesConfig
    from contract.rundir import TrainResult
    from contract.spans import DatasetRecord
    from worker.context import JobContext

__all__ = ["Launcher", "choose_launcher", "launch", "run_in_process", "run_slurm", "run_torchrun"]

Launcher = Literal["inprocess", "torchrun", "slurm"]


def choose_launcher(resources: ResourcesConfig) -> Launcher:
    """The launcher a job's resources ask for (the config refuses the combinations that cannot run)."""
    if resources.launcher != "auto":
        return resources.launcher
    if resources.nodes > 1:
        return "slurm"
    if resources.gpus > 1:
        return "torchrun"
    return "inprocess"


def launch(ctx: JobContext, config: DistillConfig, records: list[DatasetRecord]) -> TrainResult:
    """Train with the launcher the job's resources ask for."""
    launcher = choose_launcher(config.resources)
    if launcher == "slurm":
        return run_slurm(ctx, config, records)
    if launcher == "torchrun":
        return run_torchrun(ctx, config, records)
    return run_in_process(ctx, config, records)
