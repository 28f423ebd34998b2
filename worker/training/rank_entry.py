"""What every per-rank entry point shares (``python -m worker.training.train``, ``… .capture``).

Each runs as one process, alone or as one rank under torchrun, and speaks the same contract to its launcher:
``--config``, ``--data`` and ``--out`` on the command line; SIGTERM/SIGINT ask for a cooperative stop (the
job's loop polls ``should_stop``); rank 0 prints one JSON object per line on stdout, ``{"event": "metrics", …}``
per progress report and a final ``{"event": "result", …}``; and the exit code is a ``contract.rundir.ExitCode``:
COMPLETED or STOPPED from the result's ``status``, BAD_INPUT for an error ``worker.context.is_permanent`` calls
permanent, FAILED for anything else. The error goes to stderr, an unexpected one with its traceback.

An entry point builds its parser with `rank_parser` (adding its own arguments), then hands `run_rank` how to
read its inputs and how to run its job.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from contract.rundir import ExitCode

if TYPE_CHECKING:
    from contract.job_config import ResourcesConfig
    from contract.spans import DatasetRecord

Progress = Callable[[dict[str, Any]], None]


class _JobConfig(Protocol):
    @property
    def resources(self) -> ResourcesConfig: ...


C = TypeVar("C", bound=_JobConfig)


def rank_parser(prog: str, description: str, *, config_help: str, out_help: str) -> argparse.ArgumentParser:
    """The parser of ``--config``, ``--data`` and ``--out``; an entry point adds its own arguments after them."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, required=True, help=config_help)
    parser.add_argument("--data", type=Path, required=True, help="dataset JSONL export (records with split)")
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    return parser


def run_rank(
    read_inputs: Callable[[], tuple[C, list[DatasetRecord]]],
    run: Callable[[C, list[DatasetRecord], Progress | None, Callable[[], bool]], dict[str, Any]],
) -> int:
    """One rank, start to exit code: stop on SIGTERM/SIGINT, read the inputs (before any process group starts),
    join torchrun's process group, ``run(config, records, progress, should_stop)`` (``progress`` is None on
    ranks other than 0) and print rank 0's ``result`` event, the dict ``run`` returns, whose ``status`` is
    "completed" or "stopped"."""
    stop_requested = False

    def request_stop(signum: int, _frame: Any) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    try:
        config, records = read_inputs()
    except Exception as exc:
        return _fail(exc)

    from worker.training.distributed import init_distributed, shutdown_distributed  # torch: once inputs are read

    rank, _world = init_distributed(config.resources.device)
    try:
        result = run(config, records, (lambda row: _emit("metrics", row)) if rank == 0 else None,
                     lambda: stop_requested)
    except Exception as exc:
        return _fail(exc)
    finally:
        shutdown_distributed()
    if rank == 0:
        _emit("result", result)
    return ExitCode.COMPLETED if result["status"] == "completed" else ExitCode.STOPPED


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
