"""Running a `capture` job: in the worker's own process, or in K ranks under torchrun (``resources.gpus > 1``).

Under torchrun it works like the distill launcher (`worker.launchers.torchrun`, whose supervision it reuses):
the config and records go into the run directory's ``inputs/``, then

    torchrun --standalone --nproc_per_node=K -m worker.training.capture --config … --data … --out <run>/capture

runs with the attempt's lease file in its environment (the ranks' ``FileFence``). Rank 0's ``metrics`` lines
become progress reports and its ``result`` line the job's result; a stop request (cancel, worker shutdown, lost
lease) is sent to the ranks as SIGTERM, which finish their current teacher batch and exit ``STOPPED``; a
permanent error (``ExitCode.BAD_INPUT``) fails the job at once, anything else is retried. Either way the shards
already promoted stay, and the next attempt skips them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from contract.capture import CAPTURE_DIR
from contract.job_config import CaptureConfig
from contract.rundir import ExitCode
from contract.spans import DatasetRecord
from worker.context import JobContext, PermanentJobError

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def capture_command(launcher: str | None, nproc: int, args: list[str]) -> list[str]:
    base = shlex.split(launcher) if launcher else [sys.executable, "-m", "torch.distributed.run"]
    return [*base, "--standalone", f"--nproc_per_node={nproc}", "-m", "worker.training.capture", *args]


def run_capture_job(ctx: JobContext, config: CaptureConfig, records: list[DatasetRecord]) -> dict[str, Any]:
    """Capture with the processes the job's resources ask for; returns `run_capture`'s result."""
    out = ctx.out_dir / CAPTURE_DIR
    if config.resources.gpus == 1:
        from worker.training.capture import run_capture

        return run_capture(config, records, out, fence=ctx.fence, progress=ctx.report_progress,
                           should_stop=ctx.should_stop, log=ctx.log)
    return _run_torchrun(ctx, config, records, out)


def _run_torchrun(ctx: JobContext, config: CaptureConfig, records: list[DatasetRecord], out: Path) -> dict[str, Any]:
    from worker.launchers.torchrun import _die_with_parent, _Output, _supervise

    run, nproc = ctx.run_dir, config.resources.gpus
    ctx.fence.check()
    run.inputs.mkdir(parents=True, exist_ok=True)
    run.input_config.write_text(config.model_dump_json(indent=2))
    with run.input_data.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    cmd = capture_command(ctx.settings.worker_torchrun, nproc,
                          ["--config", str(run.input_config), "--data", str(run.input_data), "--out", str(out)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
           **ctx.fence.rank_env()}
    ctx.log(f"capturing in {nproc} processes under torchrun", data={"command": cmd})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                            preexec_fn=_die_with_parent)
    output = _Output(ctx, proc)
    stop_sent = _supervise(ctx, proc)
    output.join()
    rc, event = proc.returncode, output.result
    if rc == ExitCode.COMPLETED and event is not None and event.get("status") == "completed":
        return event
    if stop_sent or rc == ExitCode.STOPPED:
        return event if event is not None else {"status": "stopped"}
    text = "\n".join(output.tail)
    codes = {int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", text)}
    message = f"torchrun exited with {rc} (rank exit codes: {sorted(codes) or 'unknown'}):\n{text}"
    if rc == ExitCode.BAD_INPUT or ExitCode.BAD_INPUT in codes:
        raise PermanentJobError(message)
    raise RuntimeError(message)
