"""A worker that dies takes its torchrun and the ranks with it (``PR_SET_PDEATHSIG``), so a job whose lease then
expires is never trained by two process groups at once.

A real worker process runs a long two-rank CPU job under a long lease (so neither the lease nor the ranks'
lease-file fence can end the ranks during the test). The test finds the real process tree by walking /proc:
the worker's child is torchrun, torchrun's children are the ranks (the worker's grandchildren). It SIGKILLs the
worker (no handler runs) and checks that torchrun and every rank, by their own pids, are gone. The test keeps the
output pipes open meanwhile, so the tree cannot die merely of writing to a closed pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.jobs.conftest import distill_spec, make_dataset, wait_for
from tests.jobs.proctree import children as _children
from tests.jobs.proctree import cmdline as _cmdline
from tests.jobs.proctree import stat as _stat

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 600.0


def _drain(fd: int) -> None:
    """Read a pipe until every writer has closed it."""
    try:
        while os.read(fd, 65536):
            pass
    finally:
        os.close(fd)


def _spawn_worker(database_url: str, settings: Any, models_root: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DISTILLERY_DATABASE_URL": database_url, "DISTILLERY_DATA_DIR": str(settings.data_dir),
           "DISTILLERY_MODELS_ROOT": str(models_root), "DISTILLERY_WORKER_KINDS": "distill",
           "DISTILLERY_WORKER_LEASE_SECONDS": str(LEASE_S), "DISTILLERY_WORKER_POLL_INTERVAL": "0.3",
           "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def test_killing_the_worker_takes_torchrun_and_its_ranks_down(committed: Any, database_url: str, jobs_settings: Any,
                                                              models_root: Path, tmp_path: Path) -> None:
    client = committed
    dataset = make_dataset(client, 6, want=lambda s: s.count("eval") >= 1 and s.count("train") >= 4)
    spec = distill_spec(dataset["id"], training={"micro_batch_size": 1, "grad_accum_steps": 1, "max_steps": 100_000,
                                                 "checkpoint_every": 0})
    spec["resources"] = {"device": "cpu", "gpus": 2}
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    log = tmp_path / "worker.log"
    worker = _spawn_worker(database_url, jobs_settings, models_root, log)
    tree: dict[int, tuple[str, int]] = {}
    try:
        def training() -> bool:
            assert worker.poll() is None, f"worker exited {worker.returncode}:\n{log.read_text()}"
            return ((client.get(f"/v1/jobs/{job_id}").json()["progress"] or {}).get("step", 0) >= 2)

        wait_for("the ranks to train", training, timeout=120, interval=0.2)
        launchers = [p for p in _children(worker.pid) if "torch.distributed.run" in _cmdline(p)]
        assert len(launchers) == 1, [(p, _cmdline(p)) for p in _children(worker.pid)]
        ranks = [p for p in _children(launchers[0]) if "worker.training.train" in _cmdline(p)]
        assert len(ranks) == 2, [(p, _cmdline(p)) for p in _children(launchers[0])]
        for pid in [launchers[0], *ranks]:
            stat = _stat(pid)
            assert stat is not None
            tree[pid] = stat

        # The test holds the pipes torchrun and the ranks write to, so the worker's death does not close them: a
        # rank writing to a closed pipe would die of that alone, and only the death signal is under test here.
        held = [os.open(f"/proc/{launchers[0]}/fd/{fd}", os.O_RDONLY) for fd in (1, 2)]
        drains = [threading.Thread(target=_drain, args=(fd,), daemon=True) for fd in held]
        for t in drains:
            t.start()
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

        def same_process_alive(pid: int) -> bool:
            now = _stat(pid)
            return now is not None and now[1] == tree[pid][1]  # the same start time: not a reused pid

        wait_for("torchrun and its ranks to die with the worker",
                 lambda: not any(same_process_alive(p) for p in tree), timeout=90, interval=0.2)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        for pid, (_, start) in tree.items():  # a broken run must not leave its ranks training
            now = _stat(pid)
            if now is not None and now[1] == start:
                os.kill(pid, signal.SIGKILL)
