"""Trainer command line: `python -m worker.training.train --config cfg.json --data data.jsonl --out DIR`.

The same command runs under `torchrun --nproc_per_node=K` (one process per GPU, or CPU processes with gloo):
it then initialises torch.distributed from the environment torchrun sets (nccl on CUDA, gloo on CPU), and
`run_training` shards each global batch across the ranks. SIGTERM/SIGINT ask for a cooperative stop: the
current step finishes, a checkpoint is written, and the process exits with `ExitCode.STOPPED` so the worker
hands the job back; a later run with the same --out resumes from that checkpoint.

Rank 0 prints one JSON object per line on stdout: {"event": "metrics", ...} per step and a final
{"event": "result", **TrainResult.to_json()}. Exit codes are `contract.rundir.ExitCode`: COMPLETED,
STOPPED, BAD_INPUT for an error `worker.context.is_permanent` calls permanent (the rule the in-process
worker applies too: a bad config or data, a model that cannot be loaded, an incompatible teacher), and
FAILED for anything else (retried). The error goes to stderr; an unexpected one with its traceback.
That contract is shared with the capture's ranks: `worker.training.rank_entry`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.training.rank_entry import Progress, rank_parser, run_rank

if TYPE_CHECKING:
    from collections.abc import Callable

    from contract.job_config import DistillConfig
    from contract.spans import DatasetRecord


def _read_inputs(config_path: Path, data_path: Path) -> tuple[DistillConfig, list[DatasetRecord]]:
    """The job config and records the launcher wrote; unreadable or invalid inputs are permanent errors."""
    from contract.job_config import DistillConfig
    from worker.context import BadJobInput
    from worker.training.data import read_records

    try:
        text = config_path.read_text()
    except OSError as exc:
        raise BadJobInput(f"cannot read the job config: {exc}") from exc
    config = DistillConfig.model_validate_json(text)
    try:
        return config, read_records(data_path)
    except OSError as exc:
        raise BadJobInput(f"cannot read the job records: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = rank_parser("python -m worker.training.train", __doc__.split("\n")[0], config_help="DistillConfig as JSON",
                         out_help="run directory (checkpoints, final model, reports)")
    parser.add_argument("--job-id", default=None, help="recorded in checkpoint meta.json")
    args = parser.parse_args(argv)

    def train(config: DistillConfig, records: list[DatasetRecord], progress: Progress | None,
              should_stop: Callable[[], bool]) -> dict[str, Any]:
        from worker.training.trainer import run_training

        return run_training(config, records, args.out, progress=progress, should_stop=should_stop,
                            job_id=args.job_id).to_json()

    return run_rank(lambda: _read_inputs(args.config, args.data), train)


if __name__ == "__main__":
    sys.exit(main())
