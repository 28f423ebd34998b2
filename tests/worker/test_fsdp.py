"""FSDP2 through the real entry point: `torchrun --nproc_per_node=2 -m worker.training.train` on CPU (gloo)
with `resources.parallelism: "fsdp"` matches one process on the same global batch (losses within 1e-4, final
weights close), writes gathered checkpoints in the unsharded layout, and resumes from one exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contract.job_config import DistillConfig
from contract.rundir import list_checkpoints
from tests.worker.test_recipe import make_config, make_records
from worker.training.trainer import run_training

ROOT = Path(__file__).resolve().parents[2]
LOSS = {"weighting": "learnable", "weighting_lr": 0.05, "gamma": 0.5}
TRAINING = {"max_steps": 3, "grad_accum_steps": 2, "checkpoint_every": 1, "keep_checkpoints": 3,
            "eval_max_examples": 2, "action_exact_match_max": 2}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if '"loss"' in line]


def _numbers(tree: object, prefix: str = "") -> dict[str, float]:
    """Every number of a JSON report by its path (the sharded and the single evaluation differ only in rounding)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}.{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}[{i}]").items()}
    return {prefix: float(tree)} if isinstance(tree, int | float) else {}


def _torchrun(cfg: DistillConfig, data: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cfg_path = out.with_suffix(".json")
    cfg_path.write_text(cfg.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "worker.training.train", "--config", str(cfg_path), "--data", str(data), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-8000:]
    return proc


def test_fsdp_matches_one_process_and_resumes_exactly(chatml_model_dir: Path, tmp_path: Path) -> None:
    records = make_records(8, n_eval=2)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    fsdp_cfg = make_config(chatml_model_dir, training={**TRAINING, "micro_batch_size": 1}, loss=LOSS,
                           resources={"device": "cpu", "gpus": 2, "parallelism": "fsdp"})
    proc = _torchrun(fsdp_cfg, data, tmp_path / "fsdp")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [e["step"] for e in events if e["event"] == "metrics"] == [1, 2, 3]  # rank 0 only
    assert events[-1]["event"] == "result" and events[-1]["status"] == "completed"
    report = json.loads((tmp_path / "fsdp" / "eval_report.json").read_text())  # every rank evaluated, rank 0 wrote

    # One process, the same global batch of 4: 2 micro-batches of 2.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single_cfg = make_config(chatml_model_dir, training={**TRAINING, "micro_batch_size": 2}, loss=LOSS)
        single = run_training(single_cfg, records, tmp_path / "single")
    finally:
        torch.set_num_threads(before)

    fsdp_rows = _rows(tmp_path / "fsdp" / "metrics.jsonl")
    for key in ("loss", "loss_reason", "loss_action", "loss_curriculum", "weight_reason", "grad_norm"):
        got, want = [r[key] for r in fsdp_rows], [r[key] for r in single.history]
        assert got == pytest.approx(want, abs=1e-4, rel=1e-4), key
    # The sharded evaluation (every rank in lockstep) scores what one process scores.
    single_report = json.loads((tmp_path / "single" / "eval_report.json").read_text())
    assert _numbers(report["before"]) == pytest.approx(_numbers(single_report["before"]), rel=1e-5, abs=1e-6)
    wa = load_file(str(tmp_path / "fsdp" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "single" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4

    # Gathered checkpoints: the unsharded layout, full tensors under the student's own parameter names.
    fsdp_ckpt, single_ckpt = (list_checkpoints(tmp_path / name)[-1][1] for name in ("fsdp", "single"))
    ca, cb = load_file(str(fsdp_ckpt / "model.safetensors")), load_file(str(single_ckpt / "model.safetensors"))
    assert {k: v.shape for k, v in ca.items()} == {k: v.shape for k, v in cb.items()}

    # Resume: the run directory as a crash after step 2 leaves it; the resumed run redoes step 3 exactly.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "fsdp", resumed)
    for step, path in list_checkpoints(resumed):
        if step > 2:
            shutil.rmtree(path)
    shutil.rmtree(resumed / "final")
    _torchrun(fsdp_cfg, data, resumed)
    again = _rows(resumed / "metrics.jsonl")
    assert [r["step"] for r in again] == [1, 2, 3]
    assert again[2]["loss"] == pytest.approx(fsdp_rows[2]["loss"], abs=1e-6)
    wc = load_file(str(resumed / "final" / "model.safetensors"))
    assert max(float((wa[k] - wc[k]).abs().max()) for k in wa) < 1e-6


@pytest.mark.parametrize(("extra", "message"), [
    ({"loss": {"pcgrad": True}}, "pcgrad"),
    ({"training": {"lora": {"r": 4}}}, "lora"),
])
def test_fsdp_refuses_what_it_cannot_shard(extra: dict, message: str) -> None:
    raw = {"student_model": "x", "resources": {"device": "cpu", "gpus": 2, "parallelism": "fsdp"}, **extra}
    with pytest.raises(ValueError, match=message):
        DistillConfig.model_validate(raw)
    raw["resources"]["parallelism"] = "ddp"
    DistillConfig.model_validate(raw)  # the same job under DDP is fine
