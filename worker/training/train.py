"""Trainer command line: `python -m worker.training.train --config cfg.json --data data.jsonl --out DIR`.

The same command runs under `torchrun --nproc_per_node=K` (one process per GPU, or CPU processes with gloo):
it then initialises torch.distributed from the environment torchrun sets (nccl on CUDA, gloo on CPU), and
`run_training` shards each global batch across the ranks. SIGTERM/SIGINT ask for a cooperative stop: the
current step finishes, a checkpoint is written, and the process exits with code 75 (EX_TEMPFAIL) so the
worker hands the job back; a later run with the same --out resumes from that checkpoint.

Rank 0 prints one JSON object per line on stdout: {"event": "metrics", ...} per step and a final
{"event": "result", ...}. Exit codes: 0 completed, 75 stopped, 2 bad config/data (an incompatible teacher
included), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_STOPPED = 75
EXIT_BAD_INPUT = 2


def _emit(event: str, payload: dict[str, Any]) -> None:
    print(json.dumps({"event": event, **payload}, default=str), flush=True)


def _init_distributed(device_choice: str) -> tuple[int, int]:
    """Initialise torch.distributed under torchrun; returns (rank, world_size)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    use_cuda = device_choice != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="DistillConfig as JSON")
    parser.add_argument("--data", type=Path, required=True, help="dataset JSONL export (records with split)")
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, final model, reports)")
    parser.add_argument("--job-id", default=None, help="recorded in checkpoint meta.json")
    args = parser.parse_args(argv)

    from pydantic import ValidationError

    from contract.job_config import DistillConfig
    from worker.training.data import read_records

    try:
        config = DistillConfig.model_validate_json(args.config.read_text())
        records = read_records(args.data)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    stop_requested = False

    def request_stop(signum: int, _frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    rank, world = _init_distributed(config.resources.device)
    try:
        from worker.training.recipe import run_training

        result = run_training(
            config,
            records,
            args.out,
            progress=(lambda row: _emit("metrics", row)) if rank == 0 else None,
            should_stop=lambda: stop_requested,
            job_id=args.job_id,
        )
    except ValueError as exc:  # incompatible teacher, nothing trainable, checkpoint from another run, ...
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank == 0:
        _emit(
            "result",
            {
                "status": result.status,
                "steps": result.steps,
                "total_steps": result.total_steps,
                "final_metrics": result.final_metrics,
                "skipped": result.skipped,
                "final_dir": result.final_dir,
                "checkpoint_dir": result.checkpoint_dir,
                "eval_report_path": result.eval_report_path,
                "plot_path": result.plot_path,
                "resumed_from_step": result.resumed_from_step,
            },
        )
    return 0 if result.status == "completed" else EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
