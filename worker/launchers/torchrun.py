"""The torchrun launcher: a `distill` job with ``resources.gpus > 1`` trains in K processes.

It writes the job's config and dataset records into the run directory (``RunDir.input_config``,
``RunDir.input_data``), then starts

    torchrun --standalone --nproc_per_node=K -m worker.training.train --config … --data … --out out_dir

(``settings.worker_torchrun``, default this Python's ``-m torch.distributed.run``) and reads rank 0's
JSON lines from its stdout: each ``{"event": "metrics", …}`` becomes a progress report, the final
``{"event": "result", …}`` the ``TrainResult`` (``TrainResult.from_json``). The ranks' stderr is
appended to ``RunDir.train_log``.

Exit codes are ``contract.rundir.ExitCode``: the ranks decide ``BAD_INPUT`` with the same
``worker.context.is_permanent`` as the in-process path, and it is raised here as a
``PermanentJobError`` (the job fails at once); any other failure is a plain error (retried).

Stopping: torchrun starts each rank in its own session, and its agent answers a SIGTERM by killing the
ranks after a 30 s grace. So when the job must stop (cancel, worker shutdown, lost lease) the SIGTERM
goes to the ranks themselves: they agree on a step, rank 0 writes a checkpoint, and they exit
``ExitCode.STOPPED``; the launcher returns a "stopped" result, and a later run resumes from the
checkpoint. If the worker process itself dies, torchrun gets SIGTERM from the kernel (PR_SET_PDEATHSIG)
and takes its ranks down, so a job whose lease expires is never trained by two process groups at once.
If it is paused instead (SIGSTOP, a frozen VM), its ranks run on: they write through the attempt's
lease file (``worker.fence.FileFence``, ``DISTILLERY_LEASE_FILE``), which stops passing at the lease's
renew deadline, so rank 0 fails its next write, and its torchrun ends, before a successor can claim the job.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from contract.rundir import ExitCode, RunDir, TrainResult
from worker.context import JobContext, PermanentJobError
from worker.fence import Fence

if TYPE_CHECKING:
    from contract.job_config import DistillConfig
    from contract.spans import DatasetRecord

STOP_GRACE_S = 300.0  # after SIGTERM, how long the ranks may take to checkpoint before they are killed
PR_SET_PDEATHSIG = 1

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc scan; torchrun's ranks are its children)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()  # the command name may hold spaces and parentheses
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def torchrun_command(launcher: str | None, nproc: int, args: list[str]) -> list[str]:
    base = shlex.split(launcher) if launcher else [sys.executable, "-m", "torch.distributed.run"]
    return [*base, "--standalone", f"--nproc_per_node={nproc}", "-m", "worker.training.train", *args]


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _check_gpus(config: DistillConfig) -> None:
    nproc = config.resources.gpus
    if config.resources.device == "cpu":
        return
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (config.resources.device == "cuda" or visible) and visible < nproc:
        # Claims are GPU-aware, so only a worker advertising more than it has (DISTILLERY_WORKER_GPUS) gets
        # here. Retryable: another worker of the fleet may have the GPUs.
        raise RuntimeError(f"the job asks for {nproc} GPUs; this worker sees {visible}")


def write_inputs(run: RunDir, config: DistillConfig, records: list[DatasetRecord], fence: Fence) -> None:
    """The config and the records the ranks read, in the run directory (shared by the Slurm launcher)."""
    fence.check()
    run.inputs.mkdir(parents=True, exist_ok=True)
    run.input_config.write_text(config.model_dump_json(indent=2))
    with run.input_data.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


class _Output:
    """Reads the ranks' output: rank 0's events from stdout, everything else into a tail (and train.log)."""

    def __init__(self, ctx: JobContext, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.ctx = ctx
        self.result: dict[str, Any] | None = None
        self.step = 0
        self.total_steps = 0
        self.tail: deque[str] = deque(maxlen=80)
        self.readers = [threading.Thread(target=self._read_stdout, args=(proc.stdout,), daemon=True),
                        threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True)]
        for t in self.readers:
            t.start()

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.strip()
            try:
                event = json.loads(line) if line.startswith("{") else None
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict) or "event" not in event:
                self.tail.append(line)
                continue
            kind = event.pop("event")
            if kind == "metrics":
                self.step = int(event.get("step", self.step))
                self.total_steps = int(event.get("total_steps", self.total_steps))
                self.ctx.report_progress(event)
            elif kind == "result":
                self.result = event

    def _read_stderr(self, stream: IO[str]) -> None:
        with self.ctx.run_dir.train_log.open("a", encoding="utf-8") as log:
            for line in stream:
                if self.ctx.fence.held():  # an attempt whose lease moved on keeps its ranks' last words to itself
                    log.write(line)
                    log.flush()
                self.tail.append(line.rstrip("\n"))

    def join(self) -> None:
        for t in self.readers:
            t.join(timeout=10)


def _supervise(ctx: JobContext, proc: subprocess.Popen[str]) -> bool:
    """Wait for torchrun to exit, passing a stop request on to the ranks; True when one was sent."""
    stop_sent_at: float | None = None
    while proc.poll() is None:
        if stop_sent_at is None and ctx.should_stop():
            ranks = child_pids(proc.pid)
            if ranks:
                _signal(ranks, signal.SIGTERM)
            else:  # no rank started yet: torchrun's agent cleans up
                proc.terminate()
            stop_sent_at = time.monotonic()
            ctx.log("stop requested: asked the ranks to checkpoint and exit", data={"ranks": ranks})
        elif stop_sent_at is not None and time.monotonic() - stop_sent_at > STOP_GRACE_S:
            _signal([*child_pids(proc.pid), proc.pid], signal.SIGKILL)
        time.sleep(0.2)
    return stop_sent_at is not None


def run_torchrun(ctx: JobContext, config: DistillConfig, records: list[DatasetRecord]) -> TrainResult:
    """Train under torchrun; the ranks' result, or a "stopped" one when they were stopped."""
    nproc = config.resources.gpus
    _check_gpus(config)
    write_inputs(ctx.run_dir, config, records, ctx.fence)
    run = ctx.run_dir
    cmd = torchrun_command(ctx.settings.worker_torchrun, nproc, [
        "--config", str(run.input_config), "--data", str(run.input_data), "--out", str(ctx.out_dir),
        "--job-id", str(ctx.job_id),
    ])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])),
           **ctx.fence.rank_env()}  # the ranks' fence: the lease file the worker keeps fresh
    ctx.log(f"launching {nproc} processes under torchrun", data={"command": cmd})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                            preexec_fn=_die_with_parent)  # the hook only calls prctl: safe beside threads
    output = _Output(ctx, proc)
    stop_sent = _supervise(ctx, proc)
    output.join()
    rc, event = proc.returncode, output.result
    status = event.get("status") if event is not None else None
    if rc == ExitCode.COMPLETED and event is not None and status == "completed":
        return TrainResult.from_json(event)
    if stop_sent or rc == ExitCode.STOPPED or status == "stopped":
        ctx.log(f"the ranks stopped; torchrun exited with {rc}", data={"returncode": rc})
        if event is not None and status == "stopped":
            return TrainResult.from_json(event)
        return TrainResult(status="stopped", steps=output.step, total_steps=output.total_steps)
    text = "\n".join(output.tail)
    # torchrun exits 1 whatever its ranks did; the failure summary names each rank's exit code.
    codes = {int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", text)}
    message = f"torchrun exited with {rc} (rank exit codes: {sorted(codes) or 'unknown'}):\n{text}"
    if rc == ExitCode.BAD_INPUT or ExitCode.BAD_INPUT in codes:
        raise PermanentJobError(message)
    raise RuntimeError(message)
