"""Distill jobs on a real Slurm: a one-node cluster (munged + slurmctld + slurmd from Debian's ``slurm-wlm``)
is started for this module from a generated ``slurm.conf`` in a temporary folder, and stopped after.

Jobs go through the API and a worker like any other: ``resources: {device: cpu, gpus: 2, launcher: slurm}``
is submitted with sbatch and trained by ``srun torchrun`` (two gloo CPU ranks). A job whose step is killed
(``scancel --signal=KILL <id>.0``: no checkpoint on the way out) fails that attempt, and the retry resumes
from the newest checkpoint and succeeds; a cancel through the API reaches Slurm (the ranks checkpoint, the
Slurm job leaves the queue); a Slurm job left by an earlier attempt is cancelled before a new one is
submitted; a rank's permanent error fails the job at once; the batch script's watchdog stops the ranks
when no worker follows them. The pure parts (launcher choice, script, options, parsing, how an attempt
settles) are tested without Slurm. Only missing Slurm binaries skip the cluster tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contract.job_config import DistillConfig, EvaluateConfig, ResourcesConfig
from contract.rundir import ExitCode, RunDir, TrainResult, list_checkpoints, read_metrics
from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from worker.context import PermanentJobError, is_permanent
from worker.launchers import choose_launcher
from worker.launchers.slurm import (
    SLURM_DIR,
    JobState,
    Slurm,
    batch_script,
    job_name,
    parse_sacct,
    parse_scontrol,
    sbatch_options,
    settle,
    submit_env,
)
from worker.loop import run_worker, start_background_worker

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")


# -- without Slurm ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("resources", "launcher"), [
    ({}, "inprocess"),
    ({"gpus": 2}, "torchrun"),
    ({"nodes": 2}, "slurm"),
    ({"nodes": 2, "gpus": 4}, "slurm"),
    ({"launcher": "slurm"}, "slurm"),
    ({"gpus": 2, "launcher": "slurm"}, "slurm"),
    ({"launcher": "torchrun"}, "torchrun"),
])
def test_the_launcher_follows_the_resources(resources: dict[str, Any], launcher: str) -> None:
    assert choose_launcher(ResourcesConfig.model_validate(resources)) == launcher


@pytest.mark.parametrize(("resources", "needle"), [
    ({"nodes": 2, "launcher": "torchrun"}, "needs launcher 'slurm'"),
    ({"nodes": 2, "launcher": "inprocess"}, "needs launcher 'slurm'"),
    ({"gpus": 2, "launcher": "inprocess"}, "runs several processes"),
    ({"nodes": 0}, "greater than or equal to 1"),
    ({"nodes": 1025}, "less than or equal to 1024"),
    ({"launcher": "k8s"}, "'auto', 'inprocess', 'torchrun' or 'slurm'"),
])
def test_impossible_resources_are_refused(resources: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        DistillConfig.model_validate({"resources": resources})


def test_evaluate_jobs_stay_in_process() -> None:
    for resources in ({"nodes": 2, "launcher": "slurm"}, {"launcher": "slurm"}, {"launcher": "torchrun"}):
        with pytest.raises(ValidationError, match="evaluate jobs run in the worker's own process"):
            EvaluateConfig.model_validate({"resources": resources})
    assert EvaluateConfig.model_validate({"resources": {"launcher": "inprocess"}}).resources.nodes == 1


def test_batch_script_and_options(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "data dir" / "jobs" / "j1")
    config = DistillConfig.model_validate({"resources": {"nodes": 3, "gpus": 8, "device": "cuda"}})
    script = batch_script(config=config, run=run, job_id="j1", attempt=2, torchrun="torchrun --max-restarts=0",
                          setup="module load cuda", rdzv_port=None, watchdog_s=180, grace_s=300)
    srun = re.sub(r" \\\n\s*", " ", script[script.index("\nsrun "):])  # one line: continuations joined
    assert 'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1' in srun
    assert ('torchrun --max-restarts=0 --nnodes="$SLURM_NNODES" --nproc_per_node=8 --rdzv_backend=c10d '
            '--rdzv_endpoint="$head:$port" --rdzv_id="$SLURM_JOB_ID" -m worker.training.train') in srun
    assert f"--out '{run.root}'" in srun and f"--config '{run.input_config}'" in srun  # quoted: a space
    assert 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in script
    assert "port=$((29500 + SLURM_JOB_ID % 1000))" in script
    assert script.index("module load cuda") < script.index("\nsrun ")
    assert "TORCH_ELASTIC_SHUTDOWN_TIMEOUT=300" in script and '-ge 180 ]' in script
    fixed = batch_script(config=config, run=run, job_id="j1", attempt=1, torchrun=None, setup=None, rdzv_port=31000,
                         watchdog_s=120, grace_s=300)
    assert "\nport=31000\n" in fixed and "-m torch.distributed.run --nnodes" in fixed
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # it parses

    options = sbatch_options(config, run, "j1", partition="gpu", extra="--time=1:00:00 --partition=big")
    assert options[:4] == ["--job-name=distillery-j1", "--nodes=3", "--ntasks-per-node=1", "--gpus-per-node=8"]
    assert "--no-requeue" in options and f"--error={run.train_log}" in options
    assert options[-3:] == ["--partition=gpu", "--time=1:00:00", "--partition=big"]  # the operator's come last
    cpu = DistillConfig.model_validate({"resources": {"device": "cpu", "gpus": 2, "launcher": "slurm"}})
    cpu_options = sbatch_options(cpu, RunDir(Path("/d/100%/j")), "j", partition=None, extra=None)
    assert "--cpus-per-task=2" in cpu_options and not any("gpus" in o or "partition" in o for o in cpu_options)
    assert "--output=/d/100%%/j/slurm/job-%j.out" in cpu_options  # a literal % is not a Slurm pattern


def test_slurm_states_are_parsed() -> None:
    shown = ("JobId=7 JobName=distillery-x UserId=root(0) JobState=NODE_FAIL Reason=NodeDown Dependency=(null) "
             "Requeue=0 ExitCode=0:9 RunTime=00:00:04")
    state = parse_scontrol(shown)
    assert state == JobState("NODE_FAIL", 0, 9, "NodeDown") and state.ended
    assert str(state) == "NODE_FAIL (exit code 0, signal 9), reason NodeDown"
    assert parse_scontrol("slurm_load_jobs error: Invalid job id specified") is None
    assert parse_sacct("CANCELLED by 0|0:15\n") == JobState("CANCELLED", 0, 15)
    assert parse_sacct("") is None
    assert not JobState("PENDING").ended and not JobState("COMPLETING").ended and JobState("UNKNOWN").ended


_SUMMARY = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : %d (pid: 4242)
error: the student cannot be loaded
"""


def test_how_an_attempt_settles(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    done = {"status": "completed", "steps": 5, "total_steps": 5, "final_dir": str(tmp_path / "final")}
    stopped = {"status": "stopped", "steps": 3, "total_steps": 5}

    def outcome(state: str, event: dict[str, Any] | None, *, stop_sent: bool = False, log: str = "",
                wrote_output: bool = True) -> Any:
        return settle("9", JobState(state, 0, 0), event, stop_sent=stop_sent, log_text=log,
                      wrote_output=wrote_output, run=run, last_step=(2, 5))

    assert outcome("COMPLETED", done) == TrainResult(status="completed", steps=5, total_steps=5,
                                                     final_dir=tmp_path / "final")
    assert outcome("UNKNOWN", done).status == "completed"  # Slurm forgot the job; rank 0 said it all
    # the ranks checkpointed on someone else's SIGTERM (scancel, time limit, preemption): handed back
    assert (outcome("CANCELLED", stopped).status, outcome("TIMEOUT", stopped).steps) == ("stopped", 3)
    # a stop was sent and the ranks said nothing (not started yet, or killed after the grace)
    assert outcome("CANCELLED", None, stop_sent=True) == TrainResult(status="stopped", steps=2, total_steps=5)
    with pytest.raises(PermanentJobError, match=r"Slurm job 9 ended FAILED .*rank exit codes: \[2\]") as bad:
        outcome("FAILED", None, log=_SUMMARY % 2)
    assert is_permanent(bad.value) and "the student cannot be loaded" in str(bad.value)
    for state, event, log in [("FAILED", None, _SUMMARY % -9), ("NODE_FAIL", None, ""), ("FAILED", done, ""),
                              ("OUT_OF_MEMORY", None, _SUMMARY % 1)]:
        with pytest.raises(RuntimeError, match=f"Slurm job 9 ended {state}") as failed:
            outcome(state, event, log=log)
        assert not is_permanent(failed.value)
    with pytest.raises(RuntimeError, match=r"wrote no output: is .* on a filesystem the compute nodes mount"):
        outcome("FAILED", None, wrote_output=False)


def test_the_job_environment_holds_no_database_secret() -> None:
    env = submit_env({"PATH": "/bin", "DISTILLERY_DATABASE_URL": "postgresql://u:pw@h/db",
                      "DISTILLERY_ADMIN_KEY": "k", "DISTILLERY_MODELS_ROOT": "/m", "SLURM_JOB_ID": "3",
                      "SLURM_CONF": "/etc/slurm/slurm.conf", "SBATCH_ACCOUNT": "ml"})
    assert env == {"PATH": "/bin", "DISTILLERY_MODELS_ROOT": "/m", "SLURM_CONF": "/etc/slurm/slurm.conf",
                   "SBATCH_ACCOUNT": "ml"}


# -- a real one-node Slurm --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _slurm_conf(root: Path, user: str) -> str:
    return "\n".join([
        "ClusterName=distillerytest", "SlurmctldHost=localhost",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", f"SlurmUser={user}", f"SlurmdUser={user}",
        "AuthType=auth/munge", f"AuthInfo=socket={root}/munge.sock", "CredType=cred/munge",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",  # no cgroups in a container
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none", "MailProg=/bin/true",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none", "ReturnToService=2", "KillWait=5", "InactiveLimit=0",
        "NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP", "",
    ])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """munged, slurmctld and slurmd on this machine (node "localhost", 2 CPUs); SLURM_CONF points at them."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm is not installed (missing {', '.join(missing)}): apt-get install -y slurm-wlm")
    root = tmp_path_factory.mktemp("slurm")
    (root / "state").mkdir()
    (root / "spool").mkdir()
    key = root / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, pwd.getpwuid(os.getuid()).pw_name))
    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setenv("SLURM_CONF", str(conf))

        def start(name: str, *args: str) -> None:
            out = stack.enter_context(open(root / f"{name}.out", "wb"))
            procs.append(subprocess.Popen([name, *args], stdout=out, stderr=subprocess.STDOUT))

        def logs() -> str:
            return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                             for p in sorted(root.glob("*.out")) + sorted(root.glob("*.log")))

        try:
            start("munged", "--foreground", "--force", f"--socket={root}/munge.sock", f"--key-file={key}",
                  f"--log-file={root}/munged.log", f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed")
            wait_for("munged's socket", (root / "munge.sock").exists, timeout=15)
            start("slurmctld", "-D", "-c", "-f", str(conf))
            start("slurmd", "-D", "-f", str(conf), "-N", "localhost")
            try:
                wait_for("the node to be idle", lambda: subprocess.run(
                    ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip() == "idle",
                    timeout=30, interval=0.2)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{logs()}") from None
            yield root
        finally:
            subprocess.run(["scancel", "--full", "--partition=debug"], capture_output=True)
            with contextlib.suppress(AssertionError):
                wait_for("the queue to empty", lambda: _squeue() == "", timeout=20, interval=0.2)
            for proc in reversed(procs):
                _stop(proc)


def _squeue(*args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True).stdout.strip()


def _slurm_spec(dataset_id: str, **training: int) -> dict[str, Any]:
    # no evaluation before and after: every Slurm run pays for it, and the torchrun tests cover it
    spec = distill_spec(dataset_id, training={"micro_batch_size": 1, "grad_accum_steps": 1, "eval_max_examples": 0,
                                              **training})
    spec["resources"] = {"device": "cpu", "gpus": 2, "launcher": "slurm"}
    return spec


@pytest.fixture
def slurm_worker(slurm_cluster: Path, jobs_settings, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(jobs_settings, "worker_slurm_poll_interval", 0.3)
    return jobs_settings


def _events(client: Any, job_id: str, kind: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/events", params={"kind": kind, "limit": 500}).json()["items"]


def test_a_killed_allocation_is_retried_from_its_checkpoint(committed, database_url, slurm_worker) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 6, want=lambda s: s.count("eval") >= 1 and s.count("train") >= 4)
    job_id = client.post("/v1/jobs", json=_slurm_spec(dataset["id"], max_steps=30, checkpoint_every=3)).json()["id"]
    out, name = slurm_worker.job_dir(job_id), job_name(job_id)
    stop = start_background_worker(database_url, slurm_worker, kinds=["distill"], poll_interval=0.3)
    try:
        # The step is killed (a crash, a lost node): nothing is saved on the way out, the attempt fails, and
        # the retry resumes from the newest periodic checkpoint.
        first = wait_for("the Slurm job", lambda: _squeue("--name", name, "-o", "%i"), timeout=30, interval=0.1)
        wait_for("a checkpoint", lambda: list_checkpoints(out), timeout=60, interval=0.05)
        subprocess.run(["scancel", "--signal=KILL", f"{first}.0"], check=True)
        wait_for("the killed job to leave the queue", lambda: first not in _squeue("--name", name, "-o", "%i"),
                 timeout=30, interval=0.1)
        saved = list_checkpoints(out)[-1][0]
        wait_for("the retry to succeed", lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded",
                 timeout=60, interval=0.2)
    finally:
        stop()
    job = client.get(f"/v1/jobs/{job_id}").json()
    logs = [e["message"] for e in _events(client, job_id, "log")]
    states = [e["message"] for e in _events(client, job_id, "state")]
    assert job["attempts"] == 2, (logs, states)
    assert any(s.startswith("attempt 1 failed; retry in") for s in states)
    submitted = [m.split()[5].rstrip(":") for m in logs if m.startswith("submitted to Slurm as job")]
    assert len(submitted) == 2 and submitted[0] == first != submitted[1]
    assert any(m.startswith(f"Slurm job {first}: FAILED") for m in logs)
    result = job["result"]
    assert (result["steps"], result["total_steps"], result["resumed_from_step"]) == (30, 30, saved)
    assert result["paths"]["final_model"] == str(out / "final")
    steps = [e["data"]["step"] for e in _events(client, job_id, "progress")]
    assert [b for a, b in pairwise(steps) if b <= a] in ([], [saved + 1])  # went on from the checkpoint
    assert sorted(set(steps)) == list(range(1, 31))
    assert [row["step"] for row in read_metrics(out / "metrics.jsonl")[0]] == list(range(1, 31))
    paths = {a["path"] for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]}
    assert {"final/model.safetensors", "metrics.jsonl", "slurm/job.sbatch", f"slurm/job-{first}.out"} <= paths
    assert _squeue("--name", name) == ""


def test_cancel_reaches_slurm(committed, database_url, slurm_worker) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 6, want=lambda s: s.count("eval") >= 1 and s.count("train") >= 4)
    job_id = client.post("/v1/jobs", json=_slurm_spec(dataset["id"], max_steps=100_000)).json()["id"]
    stop = start_background_worker(database_url, slurm_worker, kinds=["distill"], poll_interval=0.3)
    try:
        wait_for("the ranks to train", lambda: ((client.get(f"/v1/jobs/{job_id}").json()["progress"] or {})
                                                .get("step", 0) >= 2), timeout=60, interval=0.1)
        slurm_id = _squeue("--name", job_name(job_id), "-o", "%i")
        assert slurm_id.isdigit()
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        wait_for("the cancel", lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled",
                 timeout=45, interval=0.1)
    finally:
        stop()
    assert _squeue("-j", slurm_id) == ""  # Slurm no longer lists it
    job = client.get(f"/v1/jobs/{job_id}").json()
    result = job["result"]
    assert result["status"] == "stopped" and result["steps"] >= 2 and result["total_steps"] == 100_000
    out = slurm_worker.job_dir(job_id)
    assert [step for step, _ in list_checkpoints(out)] == [result["steps"]]  # written on the way out
    logs = [e["message"] for e in _events(client, job_id, "log")]
    assert "stop requested: asked the ranks to checkpoint and exit" in logs
    assert any(m.startswith(f"the ranks stopped; Slurm job {slurm_id} ended") for m in logs)


def test_leftovers_are_cancelled_and_a_permanent_error_fails_at_once(committed, database_url, slurm_worker) -> None:  # type: ignore[no-untyped-def]
    client = committed
    dataset = make_dataset(client, 4)
    spec = _slurm_spec(dataset["id"], max_steps=2)
    spec["student_model"] = "broken"  # a tokenizer but no weights: ModelLoadError in the rank
    spec["resources"]["gpus"] = 1  # one process, still submitted to Slurm (launcher "slurm")
    job_id = client.post("/v1/jobs", json={**spec, "max_attempts": 3}).json()["id"]
    # what a worker that died would leave behind: its Slurm job, still queued under the job's name
    leftover = subprocess.run(["sbatch", "--parsable", f"--job-name={job_name(job_id)}", "--output=/dev/null",
                               "--wrap", "sleep 120"], capture_output=True, text=True, check=True).stdout.strip()
    assert run_worker(database_url, slurm_worker, once=True, kinds=["distill"]) == 0
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"]) == ("failed", 1), job["error"]
    logs = [e["message"] for e in _events(client, job_id, "log")]
    assert logs.index(f"cancelling Slurm job(s) {leftover} left by an earlier attempt") < next(
        i for i, m in enumerate(logs) if m.startswith("submitted to Slurm as job"))
    assert _squeue("-j", leftover) == ""
    # the ranks judged it permanent themselves (ExitCode.BAD_INPUT), and said why
    assert re.search(r"rank exit codes: \[[^\]]*\b2\b", job["error"]), job["error"]
    assert "broken" in job["error"]  # the ModelLoadError's message, from train.log
    states = [e["message"] for e in _events(client, job_id, "state")]
    assert states[-1] == "failed" and not any("retry in" in s for s in states)


def test_the_batch_script_stops_the_ranks_when_no_worker_follows(slurm_cluster: Path, tmp_path: Path) -> None:
    """The watchdog in the generated script, run by Slurm: nobody touches ``worker.beat``, so the ranks get
    SIGTERM. A stand-in for torchrun records its command line (the rendezvous Slurm filled in) and the signal."""
    run = RunDir(tmp_path / "run")
    run.inputs.mkdir(parents=True)
    run.input_config.write_text("{}")
    (run.root / SLURM_DIR).mkdir()
    fake = tmp_path / "torchrun.sh"
    fake.write_text(f"""#!/bin/bash
echo "$@" > {tmp_path}/args
trap 'echo TERM > {tmp_path}/stopped; exit 75' TERM
while true; do sleep 0.1; done
""")
    config = DistillConfig.model_validate({"resources": {"device": "cpu", "gpus": 2, "launcher": "slurm"}})
    script = tmp_path / "job.sbatch"
    script.write_text(batch_script(config=config, run=run, job_id="wd", attempt=1, torchrun=f"bash {fake}",
                                   setup="export FROM_SETUP=yes", rdzv_port=None, watchdog_s=5, grace_s=3))
    slurm = Slurm(submit_env())
    slurm_id = slurm.submit(sbatch_options(config, run, "wd", partition=None, extra=None), script)
    wait_for("the watchdog's SIGTERM", (tmp_path / "stopped").exists, timeout=40, interval=0.2)
    state = wait_for("the job to end", lambda: (s := slurm.state(slurm_id)).ended and s, timeout=20, interval=0.2)
    assert (state.state, state.exit_code) == ("FAILED", ExitCode.STOPPED)  # srun passed the rank's code on
    port = 29500 + int(slurm_id) % 1000
    args = (tmp_path / "args").read_text().split()
    assert args[:5] == ["--nnodes=1", "--nproc_per_node=2", "--rdzv_backend=c10d",
                        f"--rdzv_endpoint=localhost:{port}", f"--rdzv_id={slurm_id}"]
    assert args[-8:] == ["--config", str(run.input_config), "--data", str(run.input_data), "--out", str(run.root),
                         "--job-id", "wd"]
    assert "no worker follows this job; stopping it" in run.train_log.read_text()
