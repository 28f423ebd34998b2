"""A distill job with resources.gpus = 2 runs under torchrun (two CPU processes, gloo): its metrics stream
into the job's progress, its result and artifacts are the job's; a cancel reaches the ranks, which
checkpoint and stop, and no process is left behind."""

from __future__ import annotations

import os
import sys

from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from tests.jobs.proctree import alive, torchrun_tree
from worker.launchers.torchrun import child_pids, torchrun_command
from worker.loop import run_worker, start_background_worker


def _two_cpu_ranks(dataset_id: str, **training: int) -> dict:
    spec = distill_spec(dataset_id, training={"micro_batch_size": 1, "grad_accum_steps": 1, **training})
    spec["resources"] = {"device": "cpu", "gpus": 2}
    return spec


def test_command_line() -> None:
    cmd = torchrun_command(None, 4, ["--out", "/x"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:] == ["--standalone", "--nproc_per_node=4", "-m", "worker.training.train", "--out", "/x"]
    assert torchrun_command("torchrun --max-restarts=0", 2, [])[:2] == ["torchrun", "--max-restarts=0"]
    assert child_pids(os.getppid()) and os.getpid() in child_pids(os.getppid())


def test_two_ranks_train_and_stop_on_cancel(committed, database_url, jobs_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = committed
    dataset = make_dataset(client, 6, want=lambda s: s.count("eval") >= 1 and s.count("train") >= 4)

    job_id = client.post("/v1/jobs", json=_two_cpu_ranks(dataset["id"], max_steps=3)).json()["id"]
    assert run_worker(database_url, jobs_settings, once=True, kinds=["distill"]) == 0
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert (job["result"]["steps"], job["result"]["total_steps"]) == (3, 3)
    assert job["result"]["eval_report"]["after"] is not None  # read back from rank 0's eval_report.json
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 500}).json()["items"]
    assert [e["data"]["step"] for e in events if e["kind"] == "progress"] == [1, 2, 3]  # rank 0 only, streamed
    assert any("launching 2 processes under torchrun" in e["message"] for e in events)
    paths = {a["path"] for a in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]}
    assert {"final/model.safetensors", "inputs/config.json", "inputs/data.jsonl", "metrics.jsonl"} <= paths

    job_id = client.post("/v1/jobs", json=_two_cpu_ranks(dataset["id"], max_steps=100_000)).json()["id"]
    stop = start_background_worker(database_url, jobs_settings, kinds=["distill"], poll_interval=0.5)
    try:
        wait_for("the ranks to train", lambda: ((client.get(f"/v1/jobs/{job_id}").json()["progress"] or {})
                                                .get("step", 0) >= 2), timeout=90, interval=0.1)
        # The worker is a thread of this process: torchrun is our child, the ranks our grandchildren.
        tree = torchrun_tree(os.getpid())
        assert len(tree) == 3, {p: _cmdline(p) for p in tree}  # torchrun and its two ranks, by their real pids
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        wait_for("the cancel", lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled",
                 timeout=30, interval=0.1)
    finally:
        stop()
    job = client.get(f"/v1/jobs/{job_id}").json()
    result = job["result"]  # the same shape as an in-process run's (TrainResult.job_result)
    assert result["status"] == "stopped" and result["steps"] >= 2 and result["total_steps"] == 100_000
    out = jobs_settings.job_dir(job_id)
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert len(checkpoints) == 1 and int(checkpoints[0].split("-")[1]) == result["steps"]  # written on the way out
    assert result["paths"]["checkpoint"] == str(out / "checkpoints" / checkpoints[0])
    events = client.get(f"/v1/jobs/{job_id}/events", params={"kind": "log", "limit": 500}).json()["items"]
    assert any(e["message"].startswith("the ranks stopped; torchrun exited with") for e in events)
    assert (out / "train.log").is_file()
    assert child_pids(os.getpid()) == [] or all("torch" not in _cmdline(p) for p in child_pids(os.getpid()))
    wait_for("torchrun and the ranks to be gone", lambda: alive(tree) == [], timeout=30)  # no rank left behind


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
