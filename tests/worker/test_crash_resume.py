"""Exact resume after a real crash: a run SIGKILLed at a random step and restarted from its newest periodic
checkpoint ends exactly where a straight run ends (per-step losses and final weights to 1e-6), and its
``metrics.jsonl`` holds each step once (the lines written after the checkpoint are trimmed on resume).

Both runs are real processes of the trainer's entry point (``python -m worker.training.train``). The crashed
one sleeps a second before each step (a wrapper around ``Trainer.step``; no numerical effect), so the SIGKILL
sent after step k's metrics line lands before step k + 1 changes anything, even on a loaded machine. k is odd
and the checkpoints are every 2 steps, so the kill always leaves one metrics line past the newest checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from contract.rundir import ExitCode, TrainResult, list_checkpoints
from tests.worker.test_recipe import make_config, make_records

ROOT = Path(__file__).resolve().parents[2]
N_STEPS = 8
WRAPPER = """
import os, runpy, sys, time
from worker.training.trainer import Trainer
pause, step = float(os.environ["CRASH_TEST_STEP_S"]), Trainer.step
def slow(self):
    time.sleep(pause)
    return step(self)
Trainer.step = slow
sys.argv[0] = "worker.training.train"
runpy.run_module("worker.training.train", run_name="__main__", alter_sys=True)
"""


def _command(cfg_path: Path, data: Path, out: Path, pause: float) -> tuple[list[str], dict[str, str]]:
    cmd = [sys.executable, "-c", WRAPPER, "--config", str(cfg_path), "--data", str(data), "--out", str(out),
           "--job-id", "crash-1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CRASH_TEST_STEP_S": str(pause),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return cmd, env


def _finish(cmd: list[str], env: dict[str, str]) -> TrainResult:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == ExitCode.COMPLETED, done.stderr[-3000:]
    return TrainResult.from_json(json.loads(done.stdout.strip().splitlines()[-1]))


def _step_rows(metrics: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]


def test_sigkill_then_resume_matches_a_straight_run(chatml_model_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(
        chatml_model_dir,
        training={"max_steps": N_STEPS, "grad_accum_steps": 2, "warmup_steps": 2, "checkpoint_every": 2,
                  "keep_checkpoints": 2},
        loss={"weighting": "learnable", "weighting_lr": 0.05, "gamma": 0.5},
        curriculum={"schedule": "competence", "initial_competence": 0.3, "competence_steps": 4},
    )
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_records(10)))
    kill_after = random.Random().randrange(3, N_STEPS - 2, 2)  # odd: one line past the checkpoint at k - 1

    straight = _finish(*_command(tmp_path / "cfg.json", data, tmp_path / "straight", 0.0))
    assert straight.status == "completed" and straight.steps == N_STEPS

    cmd, env = _command(tmp_path / "cfg.json", data, tmp_path / "crashed", 1.0)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "metrics" and event.get("step") == kill_after:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own ({proc.returncode}), k={kill_after}"
    run = tmp_path / "crashed"
    assert [r["step"] for r in _step_rows(run / "metrics.jsonl")][-1] == kill_after  # a line past the checkpoint
    assert list_checkpoints(run)[-1][0] == kill_after - 1

    resumed = _finish(cmd, env)
    assert resumed.status == "completed" and resumed.resumed_from_step == kill_after - 1, f"k={kill_after}"
    rows_a, rows_b = _step_rows(tmp_path / "straight" / "metrics.jsonl"), _step_rows(run / "metrics.jsonl")
    assert [r["step"] for r in rows_b] == list(range(1, N_STEPS + 1)), f"k={kill_after}"  # each step once
    assert [r["loss"] for r in rows_b] == pytest.approx([r["loss"] for r in rows_a], abs=1e-6), f"k={kill_after}"
    wa = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    wb = load_file(str(run / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6, f"k={kill_after}"
