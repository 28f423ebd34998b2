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
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.rundir import ExitCode

if TYPE_CHECKING:
    from contract.job_config import DistillConfig
    from contract.spans import DatasetRecord


def _emit(event: str, payload: dict[str, Any]) -> None:
    print(json.dumps({"event": event, **payload}, default=str), flush=True)


def _fail(exc: Exception) -> ExitCode:
    from worker.context import is_permanent

    if is_permanent(exc):
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {exc}", file=sys.stderr)  # the last line: what the launcher quotes
    return ExitCode.FAILED


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
    parser = argparse.ArgumentParser(prog="python -m worker.training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="DistillConfig as JSON")
    parser.add_argument("--data", type=Path, required=True, help="dataset JSONL export (records with split)")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, final model, reports)")
    parser.add_argument("--job-id", default=None, help="recorded in checkpoint meta.json")
    args = parser.parse_args(argv)

    stop_requested = False

    def request_stop(signum: int, _frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    try:
        config, records = _read_inputs(args.config, args.data)
    except Exception as exc:
        return _fail(exc)

    from worker.training.distributed import init_distributed, shutdown_distributed
    from worker.training.trainer import run_training

    rank, _world = init_distributed(config.resources.device)
    try:
        result = run_training(
            config,
            records,
            args.out,
            progress=(lambda row: _emit("metrics", row)) if rank == 0 else None,
            should_stop=lambda: stop_requested,
            job_id=args.job_id,
        )
    except Exception as exc:
        return _fail(exc)
    finally:
        shutdown_distributed()
    if rank == 0:
        _emit("result", result.to_json())
    return ExitCode.COMPLETED if result.status == "completed" else ExitCode.STOPPED


if __name__ == "__main__":
    sys.exit(main())
