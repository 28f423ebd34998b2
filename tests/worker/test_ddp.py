"""DDP through the real entry point: `torchrun --nproc_per_node=2 -m worker.training.train` on CPU (gloo)
matches one process training on the same global batch (losses within 1e-4, final weights close)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.worker.test_recipe import make_config, make_records
from worker.training.trainer import run_training


def _losses(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if '"loss"' in line]


def test_two_cpu_ranks_match_one_process(chatml_model_dir: Path, tmp_path: Path) -> None:
    records = make_records(8)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    # Learnable weights and the curriculum term check that every part of the loss is normalised globally.
    loss = {"weighting": "learnable", "weighting_lr": 0.05, "gamma": 0.5}
    ddp_cfg = make_config(
        chatml_model_dir,
        training={"max_steps": 3, "micro_batch_size": 1, "grad_accum_steps": 2},
        loss=loss,
        resources={"device": "cpu", "gpus": 2},
    )
    (tmp_path / "cfg.json").write_text(ddp_cfg.model_dump_json())
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "worker.training.train",
        "--config",
        str(tmp_path / "cfg.json"),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e["event"] == "metrics"] == [1, 2, 3]  # rank 0 only
    assert events[-1]["event"] == "result" and events[-1]["status"] == "completed"

    # One process, same global batch of 4: 2 micro-batches of 2.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single_cfg = make_config(
            chatml_model_dir,
            training={"max_steps": 3, "micro_batch_size": 2, "grad_accum_steps": 2},
            loss=loss,
        )
        single = run_training(single_cfg, records, tmp_path / "single")
    finally:
        torch.set_num_threads(before)

    ddp_rows = _losses(tmp_path / "ddp" / "metrics.jsonl")
    for key in ("loss", "loss_reason", "loss_action", "loss_curriculum", "weight_reason", "grad_norm"):
        got, want = [r[key] for r in ddp_rows], [r[key] for r in single.history]
        assert got == pytest.approx(want, abs=1e-4, rel=1e-4), key
    wa = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "single" / "final" / "model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
