"""An offline distill job under torchrun: two CPU ranks (gloo), each reading the capture for its own micro-batches,
match one process training from the same capture on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contract.job_config import CaptureConfig
from tests.worker.test_recipe import make_config, make_records
from worker.training.capture import run_capture
from worker.training.trainer import run_training


def test_two_ranks_train_from_a_capture_like_one_process(
        tiny_model_dir: Path, padded_teacher_dir: Path, tmp_path: Path) -> None:
    records = make_records(8)
    capture = tmp_path / "capture"
    run_capture(CaptureConfig.model_validate({"teacher_model": str(padded_teacher_dir),
                                              "student_model": str(tiny_model_dir), "top_k": 16, "max_seq_len": 128,
                                              "shard_size": 3, "resources": {"device": "cpu"}}), records, capture)
    loss = {"teacher_signal": "offline", "capture": str(capture), "weighting": "learnable", "weighting_lr": 0.05}
    ddp_cfg = make_config(tiny_model_dir, teacher_model=str(padded_teacher_dir),
                          training={"max_steps": 3, "micro_batch_size": 1, "grad_accum_steps": 2},
                          loss=loss, resources={"device": "cpu", "gpus": 2})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "cfg.json").write_text(ddp_cfg.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "worker.training.train", "--config", str(tmp_path / "cfg.json"), "--data", str(data),
           "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_training(make_config(tiny_model_dir, teacher_model=str(padded_teacher_dir),
                                          training={"max_steps": 3, "micro_batch_size": 2, "grad_accum_steps": 2},
                                          loss=loss), records, tmp_path / "single")
    finally:
        torch.set_num_threads(before)
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in line]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["reason_tokens"] > 0 for r in rows)
    for key in ("loss", "loss_reason", "loss_action", "grad_norm"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in single.history], abs=1e-4, rel=1e-4), key


def test_two_ranks_capture_the_same_shards_as_one_process(
        tiny_model_dir: Path, padded_teacher_dir: Path, tmp_path: Path) -> None:
    import numpy as np

    from contract.capture import shard_name

    records = make_records(7)
    config = CaptureConfig.model_validate({"teacher_model": str(padded_teacher_dir),
                                           "student_model": str(tiny_model_dir), "top_k": 8, "max_seq_len": 128,
                                           "shard_size": 2, "resources": {"device": "cpu", "gpus": 2}})
    (tmp_path / "cfg.json").write_text(config.model_dump_json())
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "worker.training.capture", "--config", str(tmp_path / "cfg.json"), "--data", str(data),
           "--out", str(tmp_path / "ranks")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    result = events[-1]
    assert result["event"] == "result" and result["status"] == "completed"
    assert result["shards_done"] == [0, 2] and result["manifest"]["shards"] == 4  # rank 0 took every other shard

    single = run_capture(config.model_copy(update={"resources": config.resources.model_copy(update={"gpus": 1})}),
                         records, tmp_path / "one")
    assert single["manifest"]["positions"] == result["manifest"]["positions"]
    for i in range(4):
        with np.load(tmp_path / "ranks" / shard_name(i)) as a, np.load(tmp_path / "one" / shard_name(i)) as b:
            assert all(np.array_equal(a[name], b[name]) for name in a.files), i
