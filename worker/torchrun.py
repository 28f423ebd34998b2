"""Multi-process distillation: a `distill` job with ``resources.gpus > 1`` runs under torchrun.

The worker writes the job's config and dataset records into ``out_dir/inputs/``, then starts

    torchrun --standalone --nproc_per_node=K -m worker.training.train --config … --data … --out out_dir

(``settings.worker_torchrun``, default this Python's ``-m torch.distributed.run``) and reads rank 0's
JSON lines from its stdout: each ``{"event": "metrics", …}`` becomes a progress report, the final
``{"event": "result", …}`` the job's result. The ranks' stderr is appended to ``out_dir/train.log``.

Stopping: torchrun starts each rank in its own session, and its agent answers a SIGTERM by killing the
ranks after a 30 s grace. So when the job must stop (cancel, worker shutdown, lost lease) the SIGTERM
goes to the ranks themselves: they agree on a step, rank 0 writes a checkpoint, and they exit 75
(EX_TEMPFAIL); the worker then cancels the job or hands it back, and a later run resumes from the
checkpoint. A rank exiting 2 (bad config or data, incompatible teacher) fails the job at once. If the
worker process itself dies, torchrun gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and takes its ranks
down, so a job whose lease expires is never trained by two process groups at once.
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

from worker.context import JobContext, PermanentJobError

if TYPE_CHECKING:
    from contract.job_config import DistillConfig

EXIT_STOPPED = 75  # worker.training.train: stopped cooperatively, checkpoint written
EXIT_BAD_INPUT = 2  # worker.training.train: bad config or data
STOP_GRACE_S = 300.0  # after SIGTERM, how long the ranks may take to checkpoint before they are killed
PR_SET_PDEATHSIG = 1

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


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


def run_distributed(ctx: JobContext, config: DistillConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the job under torchrun; the train entry point's result event, or ``{"status": "stopped"}``."""
    nproc = config.resources.gpus
    if config.resources.device != "cpu":
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (config.resources.device == "cuda" or visible) and visible < nproc:
            # Retryable: another worker of the fleet may have the GPUs (there is no GPU-aware claim yet).
            raise RuntimeError(f"the job asks for {nproc} GPUs; this worker sees {visible}")
    inputs = ctx.out_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    config_path, data_path = inputs / "config.json", inputs / "data.jsonl"
    config_path.write_text(config.model_dump_json(indent=2))
    with data_path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    cmd = torchrun_command(ctx.settings.worker_torchrun, nproc, [
        "--config", str(config_path), "--data", str(data_path), "--out", str(ctx.out_dir), "--job-id", str(ctx.job_id),
    ])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
    ctx.log(f"launching {nproc} processes under torchrun", data={"command": cmd})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                            preexec_fn=_die_with_parent)  # the hook only calls prctl: safe beside threads
    assert proc.stdout is not None and proc.stderr is not None
    state: dict[str, Any] = {"result": None, "step": 0}
    tail: deque[str] = deque(maxlen=80)
    log_path = ctx.out_dir / "train.log"

    def read_stdout(stream: IO[str]) -> None:
        for line in stream:
            line = line.strip()
            try:
                event = json.loads(line) if line.startswith("{") else None
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict) or "event" not in event:
                tail.append(line)
                continue
            kind = event.pop("event")
            if kind == "metrics":
                state["step"] = int(event.get("step", state["step"]))
                ctx.report_progress(event)
            elif kind == "result":
                state["result"] = event

    def read_stderr(stream: IO[str]) -> None:
        with log_path.open("a", encoding="utf-8") as log:
            for line in stream:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))

    readers = [threading.Thread(target=read_stdout, args=(proc.stdout,), daemon=True),
               threading.Thread(target=read_stderr, args=(proc.stderr,), daemon=True)]
    for t in readers:
        t.start()
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
    for t in readers:
        t.join(timeout=10)
    rc = proc.returncode
    result: dict[str, Any] | None = state["result"]
    if rc == 0 and result is not None and result.get("status") == "completed":
        return result
    if stop_sent_at is not None or rc == EXIT_STOPPED or (result is not None and result.get("status") == "stopped"):
        return {"status": "stopped", "steps": state["step"], "returncode": rc}
    text = "\n".join(tail)
    # torchrun exits 1 whatever its ranks did; the failure summary names each rank's exit code.
    codes = {int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", text)}
    message = f"torchrun exited with {rc} (rank exit codes: {sorted(codes) or 'unknown'}):\n{text}"
    if rc == EXIT_BAD_INPUT or EXIT_BAD_INPUT in codes:
        raise PermanentJobError(message)
    raise RuntimeError(message)
