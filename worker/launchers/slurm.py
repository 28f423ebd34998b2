"""The Slurm launcher: a `distill` job with ``resources.nodes > 1`` (or ``launcher: "slurm"``) trains on a
Slurm allocation, ``gpus`` processes on each of ``nodes`` nodes, while the worker keeps the job's lease.

The worker runs on a Slurm submit host; the run directory (``DISTILLERY_DATA_DIR``) must be on a filesystem
every node mounts at the same path (the ranks read their inputs and write everything there). An attempt:

1. cancel what an earlier attempt left in the queue (jobs named ``distillery-<job id>``: a dead worker could
   not), write the inputs and ``slurm/job.sbatch``, trim ``metrics.jsonl`` to the checkpoint to resume from;
2. ``sbatch`` it: ``srun`` runs one task per node, each a ``torchrun --nnodes=$SLURM_NNODES
   --nproc_per_node=K --rdzv_backend=c10d --rdzv_endpoint=<first node>:<port> -m worker.training.train``;
   rank 0's stdout (its JSON lines) goes to ``slurm/job-<slurm id>.out``, all stderr to ``train.log``;
3. follow it: ``squeue`` every ``worker_slurm_poll_interval`` s (then ``scontrol``/``sacct`` for the final
   state); new ``metrics.jsonl`` rows become progress; ``slurm/worker.beat`` is touched every second, and the
   batch script stops the ranks itself once it stops changing for ``max(3 leases, 120 s)``, so no allocation
   trains on without a worker holding the lease (the torchrun launcher's parent-death signal, for Slurm);
4. settle (``settle``): a completed result and a COMPLETED job → the result; a stop we sent, or a "stopped"
   result (the ranks checkpointed on a plain ``scancel``, a time limit, a preemption) → "stopped", handed
   back; a rank exiting ``ExitCode.BAD_INPUT`` → ``PermanentJobError``; anything else (NODE_FAIL, a killed
   step, OUT_OF_MEMORY, a node without the run directory) → a plain error, retried from the newest checkpoint.

Stopping (cancel, worker shutdown, lost lease): a job whose ranks have not started is ``scancel``-ed; else its
steps get ``scancel --signal=TERM``: the ranks agree on a step, checkpoint and exit ``ExitCode.STOPPED``
(torchrun waits ``STOP_GRACE_S`` for them, ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``), then a full ``scancel``.
Jobs go in ``--no-requeue``: retries follow the queue's rules (attempts, backoff, fencing), not Slurm's.

Fencing: the worker's own writes go through the attempt's fence (``worker.fence``), and a successor attempt
cancels what an earlier one left in Slurm and waits for it to leave the queue before it submits (step 1), so
two allocations never train one job at once. The ranks are not given the lease file (``FileFence``, as under
torchrun): on a shared filesystem a rank may read a cached copy of it and stop a healthy job.

Why this file is long: the Slurm commands, the batch script and the follower change together.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.rundir import ExitCode, RunDir, TrainResult, list_checkpoints, trim_metrics
from worker.context import JobContext, PermanentJobError
from worker.launchers.torchrun import STOP_GRACE_S, write_inputs

if TYPE_CHECKING:
    from contract.job_config import DistillConfig
    from contract.spans import DatasetRecord

SLURM_DIR = "slurm"  # under the run directory: job.sbatch, job-<slurm id>.out, worker.beat
TERMINAL = frozenset({"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                      "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT", "UNKNOWN"})
TICK_S = 0.2  # how often a stop request is checked and metrics.jsonl read
BEAT_S = 1.0  # how often slurm/worker.beat is touched
WATCHDOG_MIN_S = 120  # the batch script stops the ranks when worker.beat is older; NFS caches attributes ~60 s
UNREACHABLE_S = 600.0  # Slurm unanswered this long: give the attempt up (retried)
LEFTOVER_WAIT_S = 180.0  # how long an earlier attempt's Slurm job may take to leave the queue
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_EXITCODE = re.compile(r"exitcode\s*:\s*(-?\d+)")  # torchrun's failure summary names each rank's code


class SlurmError(RuntimeError):
    """A Slurm command failed or is missing on this worker (retryable: another attempt may succeed)."""


@dataclass(frozen=True)
class JobState:
    """A Slurm job's state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``NODE_FAIL``, …; ``UNKNOWN`` once Slurm
    has forgotten it) with its exit code and signal when it ended, and Slurm's reason."""

    state: str
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    def __str__(self) -> str:
        code = "" if self.exit_code is None else f" (exit code {self.exit_code}, signal {self.signal})"
        reason = f", reason {self.reason}" if self.reason and self.reason != "None" else ""
        return f"{self.state}{code}{reason}"


def parse_scontrol(text: str) -> JobState | None:
    """The state in ``scontrol show job -o`` output; None when it names no state."""
    state = re.search(r"\bJobState=(\S+)", text)
    if state is None:
        return None
    code = re.search(r"\bExitCode=(\d+):(\d+)", text)
    reason = re.search(r"\bReason=(\S+)", text)
    return JobState(state.group(1), int(code.group(1)) if code else None, int(code.group(2)) if code else None,
                    reason.group(1) if reason else "")


def parse_sacct(text: str) -> JobState | None:
    """The state in ``sacct -n -X -P -o State,ExitCode`` output ("CANCELLED by 0|0:15"); None when empty."""
    for line in text.splitlines():
        state, _, code = line.strip().partition("|")
        if state:
            exit_code, _, sig = code.partition(":")
            return JobState(state.split()[0], int(exit_code) if exit_code.isdigit() else None,
                            int(sig) if sig.isdigit() else None)
    return None


class Slurm:
    """The Slurm commands the launcher runs (``sbatch``, ``squeue``, ``scontrol``, ``sacct``, ``scancel``)."""

    def __init__(self, env: dict[str, str], timeout: float = 60.0) -> None:
        self.env = env
        self.timeout = timeout

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=self.timeout)
        except FileNotFoundError:
            raise SlurmError(f"{args[0]} is not on this worker's PATH: a job for Slurm needs a worker on a Slurm "
                             "submit host") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{' '.join(args[:2])} did not answer within {self.timeout:.0f}s") from None
        if check and proc.returncode != 0:
            raise SlurmError(f"{' '.join(args[:2])} exited with {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def submit(self, options: list[str], script: Path) -> str:
        out = self._run("sbatch", "--parsable", *options, str(script)).stdout.strip()
        job_id = out.split(";", 1)[0]  # "<id>" or "<id>;<cluster>"
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {out!r}, not a job id")
        return job_id

    def state(self, job_id: str) -> JobState:
        out = self._run("squeue", "-h", "-j", job_id, "-o", "%T|%r", check=False)
        state, _, reason = out.stdout.strip().partition("|")
        if out.returncode == 0 and state and state not in TERMINAL:
            return JobState(state, reason=reason)
        # Gone from the queue: the final state, while slurmctld remembers it (MinJobAge), else accounting.
        shown = self._run("scontrol", "show", "job", "-o", job_id, check=False)
        found = parse_scontrol(shown.stdout) if shown.returncode == 0 else None
        if found is None:
            with contextlib.suppress(SlurmError):
                found = parse_sacct(self._run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode").stdout)
        if found is None and out.returncode != 0 and "Invalid job id" not in out.stderr:
            raise SlurmError(f"squeue exited with {out.returncode}: {out.stderr.strip()}")
        return found or JobState("UNKNOWN")

    def running_steps(self, job_id: str) -> list[str]:
        """The job's srun steps now running (not its batch or extern step)."""
        out = self._run("squeue", "-h", "-s", "-j", job_id, "-o", "%i").stdout.split()
        return [s for s in out if s.split(".", 1)[-1].isdigit()]

    def signal_steps(self, job_id: str, signal: str = "TERM") -> None:
        self._run("scancel", f"--signal={signal}", job_id)

    def cancel(self, job_id: str) -> None:
        self._run("scancel", job_id)

    def find(self, name: str) -> list[str]:
        """Jobs with this name still in the queue (pending, running or completing)."""
        return self._run("squeue", "-h", "--name", name, "-o", "%i").stdout.split()


def job_name(job_id: object) -> str:
    return f"distillery-{job_id}"


def submit_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment sbatch gets (and exports to the job): the worker's, without its database URL and admin
    key (the ranks never reach the database) and without the SLURM_* variables of an allocation the
    worker itself may run in (they would leak into the new job), SLURM_CONF excepted."""
    env = dict(os.environ if environ is None else environ)
    for name in list(env):
        if name in ("DISTILLERY_DATABASE_URL", "DISTILLERY_ADMIN_KEY") or (
                name.startswith("SLURM_") and name != "SLURM_CONF"):
            del env[name]
    return env


def sbatch_options(config: DistillConfig, run: RunDir, job_id: object, *, partition: str | None,
                   extra: str | None) -> list[str]:
    """sbatch's command line (before the script): one task per node, the CPUs or GPUs of its ranks."""
    res = config.resources
    slurm = run.root / SLURM_DIR

    def pattern(path: Path) -> str:  # sbatch expands %j etc. in file names: keep a literal % literal
        return str(path).replace("%", "%%")

    options = [f"--job-name={job_name(job_id)}", f"--nodes={res.nodes}", "--ntasks-per-node=1",
               f"--cpus-per-task={res.gpus}" if res.device == "cpu" else f"--gpus-per-node={res.gpus}",
               f"--chdir={run.root}", f"--output={pattern(slurm)}/job-%j.out", f"--error={pattern(run.train_log)}",
               "--open-mode=append", "--no-requeue"]
    if partition:
        options.append(f"--partition={partition}")
    return options + shlex.split(extra or "")


_SCRIPT = r"""#!/bin/bash
# Distillery job __JOB__, attempt __ATTEMPT__: written by the worker on every attempt (worker/launchers/slurm.py);
# the sbatch options are in the job's event log.
__SETUP__
export PYTHONPATH=__ROOT__${PYTHONPATH:+:$PYTHONPATH}
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=__GRACE__  # how long torchrun lets the ranks checkpoint after SIGTERM
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
port=__PORT__

# The worker touches $beat while it follows this job. When it stops changing (the worker died or hangs),
# stop the ranks so that they checkpoint: a successor resumes, and no allocation trains unwatched.
beat=__BEAT__
(
  last=""; still=0
  while sleep 5; do
    now=$(stat -c %Y "$beat" 2>/dev/null || echo none)
    if [ "$now" != "$last" ]; then last=$now; still=0; else still=$((still + 5)); fi
    if [ "$still" -ge __WATCHDOG__ ]; then
      echo "distillery: $beat unchanged for ${still}s: no worker follows this job; stopping it" >&2
      scancel --signal=TERM "$SLURM_JOB_ID"; sleep __GRACE__; scancel "$SLURM_JOB_ID"; exit 0
    fi
  done
) &
watchdog=$!

# One task per node; each first checks that it sees the run directory (a node that does not fails the
# attempt, retried, rather than its ranks calling the job's inputs unreadable, which would be permanent).
srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
  ${SLURM_CPUS_PER_TASK:+--cpus-per-task=$SLURM_CPUS_PER_TASK} \
  bash -c 'test -r "$0" || { echo "distillery: $(hostname) cannot read $0 (not shared?)" >&2; exit 1; }
           exec "$@"' __CONFIG__ \
  __TORCHRUN__ --nnodes="$SLURM_NNODES" --nproc_per_node=__NPROC__ \
  --rdzv_backend=c10d --rdzv_endpoint="$head:$port" --rdzv_id="$SLURM_JOB_ID" \
  -m worker.training.train --config __CONFIG__ --data __DATA__ --out __OUT__ --job-id __JOB__
rc=$?
kill "$watchdog" 2>/dev/null
exit "$rc"
"""


def batch_script(*, config: DistillConfig, run: RunDir, job_id: object, attempt: int, torchrun: str | None,
                 setup: str | None, rdzv_port: int | None, watchdog_s: int, grace_s: int) -> str:
    """The batch script: the ranks' environment, the worker watchdog and ``srun torchrun``."""
    q = shlex.quote
    base = shlex.split(torchrun) if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    values = {
        "__SETUP__": setup or "", "__ROOT__": q(_PACKAGE_ROOT), "__GRACE__": str(grace_s),
        "__PORT__": str(rdzv_port) if rdzv_port else "$((29500 + SLURM_JOB_ID % 1000))",
        "__BEAT__": q(str(run.root / SLURM_DIR / "worker.beat")), "__WATCHDOG__": str(watchdog_s),
        "__TORCHRUN__": " ".join(map(q, base)), "__NPROC__": str(config.resources.gpus),
        "__CONFIG__": q(str(run.input_config)), "__DATA__": q(str(run.input_data)), "__OUT__": q(str(run.root)),
        "__JOB__": q(str(job_id)), "__ATTEMPT__": str(attempt),
    }
    return re.sub(r"__[A-Z]+__", lambda m: values[m.group(0)], _SCRIPT)


class _MetricsTail:
    """New step rows of ``metrics.jsonl`` (complete lines only; a rewritten file is read again from its start,
    rows at or below the last step seen skipped)."""

    def __init__(self, path: Path, step: int) -> None:
        self.path = path
        self.step = step
        self.total_steps = 0
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:
            self.offset = 0
        if size == self.offset:
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        rows = []
        for line in complete.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            step = row.get("step") if isinstance(row, dict) else None
            if isinstance(step, int) and step > self.step and "eval" not in row:
                self.step = step
                self.total_steps = int(row.get("total_steps", self.total_steps))
                rows.append(row)
        return rows


def _result_event(path: Path) -> dict[str, Any] | None:
    """Rank 0's last ``{"event": "result", …}`` line in the job's stdout file."""
    found = None
    with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and event.pop("event", None) == "result":
                        found = event
    return found


def _log_tail(path: Path, offset: int, limit: int = 64 * 1024) -> str:
    """What the job appended to ``train.log`` (its last ``limit`` bytes)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(offset, fh.seek(0, os.SEEK_END) - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _cancel_leftovers(ctx: JobContext, slurm: Slurm, name: str) -> None:
    """Cancel the Slurm jobs an earlier attempt left running, and wait until they are gone."""
    leftovers = slurm.find(name)
    if not leftovers:
        return
    ctx.log(f"cancelling Slurm job(s) {', '.join(leftovers)} left by an earlier attempt", level="warning")
    for job in leftovers:
        slurm.cancel(job)
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while slurm.find(name):
        if time.monotonic() > deadline:
            raise SlurmError(f"Slurm job(s) {', '.join(leftovers)} of an earlier attempt did not end after scancel")
        time.sleep(1.0)


class _Follower:
    """Follows one Slurm job until it ends: progress, worker beat, stop forwarding."""

    def __init__(self, ctx: JobContext, slurm: Slurm, slurm_id: str, tail: _MetricsTail, beat: Path) -> None:
        self.ctx, self.slurm, self.slurm_id, self.tail, self.beat = ctx, slurm, slurm_id, tail, beat
        self.stop_sent_at: float | None = None
        self.killed = False

    def run(self, poll_interval: float) -> JobState:
        state, last_seen, next_query, next_beat = JobState("PENDING"), "", 0.0, 0.0
        unanswered_since: float | None = None
        while True:
            now = time.monotonic()
            if now >= next_beat:
                if self.ctx.fence.held():  # a worker whose lease moved on stops vouching for the allocation
                    with contextlib.suppress(OSError):
                        self.beat.touch()
                next_beat = now + BEAT_S
            for row in self.tail.read():
                self.ctx.report_progress(row)
            if now >= next_query:
                next_query = now + poll_interval
                try:
                    state = self.slurm.state(self.slurm_id)
                    unanswered_since = None
                except SlurmError as exc:
                    if unanswered_since is None:
                        unanswered_since = now
                        self.ctx.log(f"Slurm did not answer; still following: {exc}", level="warning")
                    elif now - unanswered_since > UNREACHABLE_S:
                        raise
                if state.state != last_seen:
                    last_seen = state.state
                    self.ctx.log(f"Slurm job {self.slurm_id}: {state}", data={"slurm_job_id": self.slurm_id,
                                                                            "state": state.state})
                if state.ended:
                    for row in self.tail.read():  # the rows written just before the end
                        self.ctx.report_progress(row)
                    return state
            with contextlib.suppress(SlurmError):  # Slurm busy: tried again at the next tick
                self._forward_stop(state)
            time.sleep(TICK_S)

    def _forward_stop(self, state: JobState) -> None:
        if self.stop_sent_at is None and self.ctx.should_stop():
            if state.state != "PENDING" and self.slurm.running_steps(self.slurm_id):
                self.slurm.signal_steps(self.slurm_id, "TERM")
                message = "stop requested: asked the ranks to checkpoint and exit"
            else:  # no rank runs yet: nothing to save
                self.slurm.cancel(self.slurm_id)
                self.killed = True
                message = "stop requested: cancelled the Slurm job before its ranks started"
            self.stop_sent_at = time.monotonic()
            self.ctx.log(message, data={"slurm_job_id": self.slurm_id})
        elif (self.stop_sent_at is not None and not self.killed
              and time.monotonic() - self.stop_sent_at > STOP_GRACE_S):
            self.slurm.cancel(self.slurm_id)
            self.killed = True


def run_slurm(ctx: JobContext, config: DistillConfig, records: list[DatasetRecord]) -> TrainResult:
    """Train on a Slurm allocation; the ranks' result, or a "stopped" one when they were stopped."""
    settings, run = ctx.settings, ctx.run_dir
    slurm = Slurm(submit_env())
    name = job_name(ctx.job_id)
    _cancel_leftovers(ctx, slurm, name)
    (run.root / SLURM_DIR).mkdir(parents=True, exist_ok=True)
    write_inputs(run, config, records, ctx.fence)
    checkpoints = list_checkpoints(run.root)
    resume_step = checkpoints[-1][0] if checkpoints else 0
    trim_metrics(run.metrics, resume_step)  # what the ranks will do: rows past the checkpoint are recomputed
    watchdog_s = int(max(WATCHDOG_MIN_S, 3 * settings.worker_lease_seconds))
    script = run.root / SLURM_DIR / "job.sbatch"
    script.write_text(batch_script(config=config, run=run, job_id=ctx.job_id, attempt=ctx.attempt,
                                   torchrun=settings.worker_torchrun, setup=settings.worker_slurm_setup,
                                   rdzv_port=settings.worker_slurm_rdzv_port, watchdog_s=watchdog_s,
                                   grace_s=int(STOP_GRACE_S)))
    beat = run.root / SLURM_DIR / "worker.beat"
    beat.touch()
    options = sbatch_options(config, run, ctx.job_id, partition=settings.worker_slurm_partition,
                             extra=settings.worker_slurm_sbatch_args)
    log_offset = run.train_log.stat().st_size if run.train_log.exists() else 0
    tail = _MetricsTail(run.metrics, resume_step)
    slurm_id = slurm.submit(options, script)
    res = config.resources
    ctx.log(f"submitted to Slurm as job {slurm_id}: {res.nodes} node(s) × {res.gpus} process(es)",
            data={"slurm_job_id": slurm_id, "sbatch": options, "script": str(script)})
    follower = _Follower(ctx, slurm, slurm_id, tail, beat)
    state = follower.run(settings.worker_slurm_poll_interval)

    out_file = run.root / SLURM_DIR / f"job-{slurm_id}.out"
    result = settle(slurm_id, state, _result_event(out_file), stop_sent=follower.stop_sent_at is not None,
                    log_text=_log_tail(run.train_log, log_offset), wrote_output=out_file.exists(), run=run,
                    last_step=(tail.step, tail.total_steps))
    if result.status == "stopped":
        ctx.log(f"the ranks stopped; Slurm job {slurm_id} ended {state}", data={"slurm_job_id": slurm_id})
    return result


def settle(slurm_id: str, state: JobState, event: dict[str, Any] | None, *, stop_sent: bool, log_text: str,
           wrote_output: bool, run: RunDir, last_step: tuple[int, int]) -> TrainResult:
    """The attempt's outcome from how the Slurm job ended, rank 0's result event (if any), whether a stop was
    sent, and what the job appended to ``train.log``; raises when it failed (see the module docstring)."""
    status = event.get("status") if event is not None else None
    if event is not None and status == "completed" and state.state in ("COMPLETED", "UNKNOWN"):
        return TrainResult.from_json(event)
    if stop_sent or status == "stopped":
        if event is not None and status == "stopped":
            return TrainResult.from_json(event)
        return TrainResult(status="stopped", steps=last_step[0], total_steps=last_step[1])
    codes = {int(c) for c in _EXITCODE.findall(log_text)}
    message = f"Slurm job {slurm_id} ended {state} (rank exit codes: {sorted(codes) or 'unknown'})"
    if not wrote_output:
        message += (f"; it wrote no output: is {run.root} on a filesystem the compute nodes mount at the same "
                    "path?")
    message += ":\n" + "\n".join(log_text.splitlines()[-80:])
    if ExitCode.BAD_INPUT in codes:
        raise PermanentJobError(message)
    raise RuntimeError(message)
