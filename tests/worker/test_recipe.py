"""The trainer through its entry points, `run_training` and `python -m worker.training.train`, on tiny models
built on the fly (CPU, seconds).

Properties checked: exact resume after a cooperative stop, learning on an overfit set, accumulation means over
the whole window, learnable span weights move, flat and teacher (KL) modes train, tokenizer mismatch refused,
examples without supervised tokens skipped and counted; bad inputs (nothing trainable, a checkpoint of other
records or of a changed config) are permanent errors, and the command line exits with the matching
`ExitCode` and a result event that `TrainResult.from_json` reads.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from contract.job_config import DistillConfig
from contract.rundir import ExitCode, TrainResult
from contract.vocab import TokenizerMismatch
from worker.context import BadJobInput, is_permanent
from worker.training.losses import compute_span_losses
from worker.training.render import collate, render_trajectory
from worker.training.trainer import run_training


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    # Tiny models: one intra-op thread is fastest, and avoids oversubscribing a small shared CPU.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sharp_teacher_dir(padded_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The padded teacher with a 10× output layer: a peaked distribution, so there is a KL to learn."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sharp-teacher")
    model = AutoModelForCausalLM.from_pretrained(padded_teacher_dir)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(10.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(padded_teacher_dir).save_pretrained(out)
    return out


CITIES = [
    "NYC",
    "Paris",
    "Tokyo",
    "Berlin",
    "Lima",
    "Oslo",
    "Cairo",
    "Delhi",
    "Rome",
    "Quito",
    "Seoul",
    "Lagos",
]


def make_record(i: int, split: str = "train") -> dict[str, Any]:
    """A canonical tool-use trajectory; reasoning length varies with i (different supervised counts)."""
    city = CITIES[i % len(CITIES)]
    reason = (
        f"<think>\nThe user wants the weather in {city}." + " I should call the tool." * (1 + i % 3) + "\n</think>\n"
    )
    call = "<tool_call>\n" + json.dumps({"name": "get_weather", "arguments": {"city": city}}) + "\n</tool_call>"
    first, obs, final = reason + call, json.dumps({"temp_c": 10 + i}), f"It is {10 + i} degrees in {city}."
    return {
        "id": f"traj-{i}",
        "messages": [
            {"role": "system", "text": "You are a helpful agent."},
            {"role": "user", "text": f"What is the weather in {city}?"},
            {"role": "assistant", "text": first},
            {"role": "tool", "text": obs},
            {"role": "assistant", "text": final},
        ],
        "spans": [
            {"message": 2, "start": 0, "end": len(reason), "kind": "reason"},
            {"message": 2, "start": len(reason), "end": len(first), "kind": "action"},
            {"message": 3, "start": 0, "end": len(obs), "kind": "observation"},
            {"message": 4, "start": 0, "end": len(final), "kind": "action"},
        ],
        "tools": None,
        "complexity": (i % 5) / 4,
        "split": split,
    }


def make_records(n_train: int, n_eval: int = 0) -> list[dict[str, Any]]:
    return [make_record(i) for i in range(n_train)] + [make_record(100 + i, "eval") for i in range(n_eval)]


def make_config(student: Path, **sections: dict[str, Any]) -> DistillConfig:
    raw: dict[str, Any] = {
        "student_model": str(student),
        "training": {
            "max_steps": 4,
            "micro_batch_size": 2,
            "grad_accum_steps": 1,
            "lr": 3e-3,
            "max_seq_len": 128,
            "checkpoint_every": 0,
            "eval_max_examples": 0,
        },
        "resources": {"device": "cpu"},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            raw[name] = {**raw.get(name, {}), **values}
        else:
            raw[name] = values
    return DistillConfig.model_validate(raw)


def losses_of(path: Path) -> list[float]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_exact_resume_after_stop(chatml_model_dir: Path, tmp_path: Path) -> None:
    # Learnable weights, competence sampling and the curriculum term all carry state across the resume.
    cfg = make_config(
        chatml_model_dir,
        training={"max_steps": 6, "grad_accum_steps": 2, "warmup_steps": 2},
        loss={"weighting": "learnable", "weighting_lr": 0.05, "gamma": 0.5},
        curriculum={"schedule": "competence", "initial_competence": 0.3, "competence_steps": 4},
    )
    records = make_records(10)
    straight = run_training(cfg, records, tmp_path / "straight")
    assert straight.status == "completed" and straight.steps == 6

    seen: list[int] = []
    first = run_training(
        cfg,
        records,
        tmp_path / "resumed",
        progress=lambda m: seen.append(m["step"]),
        should_stop=lambda: len(seen) >= 3,
    )
    assert first.status == "stopped" and first.steps == 3 and first.final_dir is None
    assert first.checkpoint_dir is not None and first.checkpoint_dir.name == "step-00000003"
    meta = json.loads((first.checkpoint_dir / "meta.json").read_text())
    assert meta["complete"] is True and meta["step"] == 3 and len(meta["dataset_hash"]) == 64
    second = run_training(cfg, records, tmp_path / "resumed")
    assert second.resumed_from_step == 3 and second.status == "completed"

    a, b = (
        losses_of(tmp_path / "straight" / "metrics.jsonl"),
        losses_of(tmp_path / "resumed" / "metrics.jsonl"),
    )
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, abs=1e-6)
    wa = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-6
    assert straight.final_metrics["weight_reason"] == pytest.approx(second.final_metrics["weight_reason"], abs=1e-6)


def test_resume_refuses_other_records_or_a_changed_config(chatml_model_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(chatml_model_dir, training={"max_steps": 2})
    run_training(cfg, make_records(4), tmp_path, should_stop=lambda: True)
    with pytest.raises(BadJobInput, match="dataset hash") as other_records:
        run_training(cfg, make_records(5), tmp_path)
    changed = make_config(chatml_model_dir, training={"max_steps": 2, "max_seq_len": 96}, loss={"gamma": 0.5})
    with pytest.raises(BadJobInput, match=r"config changed in loss, training\.max_seq_len$") as changed_config:
        run_training(changed, make_records(4), tmp_path)
    assert is_permanent(other_records.value) and is_permanent(changed_config.value)


def test_nothing_trainable_is_a_permanent_error(chatml_model_dir: Path, tmp_path: Path) -> None:
    records = make_records(2)
    for record in records:
        record["spans"] = [s for s in record["spans"] if s["kind"] == "observation"]
    with pytest.raises(BadJobInput, match="no trainable example") as err:
        run_training(make_config(chatml_model_dir), records, tmp_path / "run")
    assert is_permanent(err.value) and "train.no_supervised_tokens" in str(err.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_loss_decreases_on_tiny_overfit_set(chatml_model_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(chatml_model_dir, training={"max_steps": 25, "micro_batch_size": 4, "lr": 5e-3})
    result = run_training(cfg, make_records(4), tmp_path)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert all(math.isfinite(x) for x in losses)
    assert (tmp_path / "final" / "config.json").exists() and (tmp_path / "final" / "tokenizer.json").exists()


def test_accumulation_means_over_the_whole_window(chatml_model_dir: Path, tmp_path: Path) -> None:
    records = make_records(4)  # 4 examples with different numbers of reason tokens
    common = {"max_steps": 1, "max_grad_norm": 0.0, "lr": 1e-3}
    one = run_training(
        make_config(chatml_model_dir, training={**common, "micro_batch_size": 1, "grad_accum_steps": 4}),
        records,
        tmp_path / "a",
    )
    four = run_training(
        make_config(chatml_model_dir, training={**common, "micro_batch_size": 4, "grad_accum_steps": 1}),
        records,
        tmp_path / "b",
    )
    m1, m4 = one.final_metrics, four.final_metrics
    # The reference: the window mean over all supervised tokens of the 4 examples, on the initial model.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chatml_model_dir)
    model = AutoModelForCausalLM.from_pretrained(chatml_model_dir)
    examples = [render_trajectory(r["messages"], r["spans"], tok, max_seq_len=128) for r in records]
    assert len({e.n_reason for e in examples if e}) > 1
    sums = compute_span_losses(model, collate([e for e in examples if e], tok.pad_token_id))
    reference = float((sums.reason_sum / sums.reason_count + sums.action_sum / sums.action_count).detach())
    assert m1["loss"] == pytest.approx(reference, abs=1e-5)
    assert m4["loss"] == pytest.approx(reference, abs=1e-5)
    assert m1["grad_norm"] == pytest.approx(m4["grad_norm"], rel=1e-5)
    wa = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "final" / "model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5


def test_learnable_weights_are_logged_and_move(chatml_model_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(
        chatml_model_dir, training={"max_steps": 5}, loss={"weighting": "learnable", "weighting_lr": 0.05}
    )
    result = run_training(cfg, make_records(4), tmp_path)
    first, last = result.history[0], result.history[-1]
    assert first["weight_reason"] != last["weight_reason"] and first["weight_action"] != last["weight_action"]
    # Losses ≫ 1 here: s_k rises towards log L_k > 0, so the weights exp(-s_k) fall below 1.
    assert last["weight_reason"] < 1.0 and last["weight_action"] < 1.0
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {
        "weight_reason",
        "weight_action",
        "loss_reason",
        "loss_action",
        "lr",
        "grad_norm",
        "eta_s",
    } <= set(logged)


def test_flat_mode_trains(chatml_model_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(chatml_model_dir, training={"max_steps": 6}, loss={"mode": "flat"})
    result = run_training(cfg, make_records(4), tmp_path)
    assert all(row["loss_reason"] == 0.0 and row["reason_tokens"] == 0 for row in result.history)
    assert result.history[-1]["loss_action"] < result.history[0]["loss_action"]


def test_pcgrad_and_gradient_checkpointing_train(chatml_model_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(
        chatml_model_dir,
        training={"max_steps": 4, "gradient_checkpointing": True, "grad_accum_steps": 2},
        loss={"pcgrad": True, "gamma": 0.3},
    )
    result = run_training(cfg, make_records(6), tmp_path)
    losses = [row["loss"] for row in result.history]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_teacher_mode_trains_with_kl(tiny_model_dir: Path, sharp_teacher_dir: Path, tmp_path: Path) -> None:
    # The teacher shares the tokenizer but has 8 padded embedding rows: KL runs on the real vocabulary.
    cfg = make_config(
        tiny_model_dir,
        teacher_model=str(sharp_teacher_dir),
        training={"max_steps": 6, "eval_max_examples": 4},
    )
    assert cfg.loss.teacher_signal == "online"
    result = run_training(cfg, make_records(4, n_eval=2), tmp_path)
    history = result.history
    assert all(row["loss_reason"] >= 0 for row in history)
    assert history[-1]["loss_reason"] < history[0]["loss_reason"]
    assert result.eval_report is not None
    assert result.eval_report["after"]["reason"]["kl_teacher"] < result.eval_report["before"]["reason"]["kl_teacher"]


def test_teacher_with_other_tokenizer_is_refused(chatml_model_dir: Path, tmp_path: Path) -> None:
    from worker.training.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", ["completely different corpus"] * 20, vocab_size=300, seed=2)
    cfg = make_config(chatml_model_dir, teacher_model=str(other))
    with pytest.raises(TokenizerMismatch, match="tokenizers are incompatible"):
        run_training(cfg, make_records(2), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_examples_without_supervised_tokens_are_skipped(chatml_model_dir: Path, tmp_path: Path) -> None:
    records = make_records(3)
    only_context = make_record(50)
    only_context["spans"] = [s for s in only_context["spans"] if s["kind"] == "observation"]
    unlearned = make_record(51)
    unlearned["messages"][2]["loss"] = False
    unlearned["messages"][4]["loss"] = False
    cfg = make_config(chatml_model_dir, training={"max_steps": 3, "micro_batch_size": 5})
    result = run_training(cfg, [*records, only_context, unlearned], tmp_path)
    assert result.skipped == {"train.no_supervised_tokens": 2}
    assert all(math.isfinite(row["loss"]) for row in result.history)


def test_lora_trains_adapters_and_ships_a_merged_model(chatml_model_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(chatml_model_dir, training={"lora": {"r": 4}, "max_steps": 4, "checkpoint_every": 2, "lr": 1e-2})
    try:
        import peft  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="peft"):
            run_training(cfg, make_records(2), tmp_path)
        return
    result = run_training(cfg, make_records(4), tmp_path)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    saved = load_file(str(tmp_path / "checkpoints" / "step-00000004" / "model.safetensors"))
    assert saved and all("lora_" in name for name in saved)  # only the adapters are checkpointed
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert not any("lora" in name for name in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(chatml_model_dir)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[q], base.state_dict()[q])


def _cli(tmp_path: Path, cfg: DistillConfig, records: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The trainer's command line on `cfg` and `records` (written under tmp_path), and its environment."""
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    cmd = [sys.executable, "-m", "worker.training.train", "--config", str(tmp_path / "cfg.json"),
           "--data", str(data), "--out", str(tmp_path / "run"), "--job-id", "job-42"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    return cmd, env


def test_cli_stops_on_sigterm_and_resumes(chatml_model_dir: Path, tmp_path: Path) -> None:
    """The worker-facing contract: SIGTERM → checkpoint + exit 75; the same command then finishes the run."""
    cmd, env = _cli(tmp_path, make_config(chatml_model_dir, training={"max_steps": 400}), make_records(4))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # the first step has finished
    assert first["event"] == "metrics" and first["step"] == 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.STOPPED == 75, err[-2000:]
    event = json.loads(out.strip().splitlines()[-1])
    assert event["event"] == "result"
    stopped = TrainResult.from_json(event)
    assert stopped.status == "stopped" and 1 <= stopped.steps < 400 and stopped.final_dir is None
    assert stopped.checkpoint_dir is not None
    meta = json.loads((stopped.checkpoint_dir / "meta.json").read_text())
    assert meta["job_id"] == "job-42" and meta["step"] == stopped.steps

    cfg_short = make_config(chatml_model_dir, training={"max_steps": stopped.steps + 2})
    (tmp_path / "cfg.json").write_text(cfg_short.model_dump_json())  # max_steps may change on resume
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == ExitCode.COMPLETED == 0, done.stderr[-2000:]
    final = TrainResult.from_json(json.loads(done.stdout.strip().splitlines()[-1]))
    assert final.status == "completed" and final.resumed_from_step == stopped.steps
    assert final.steps == final.total_steps == stopped.steps + 2
    assert final.final_dir == tmp_path / "run" / "final" and (final.final_dir / "config.json").exists()
    assert final.final_metrics["step"] == final.steps and final.plot_path is not None and final.plot_path.exists()


def test_cli_exit_codes_follow_the_permanence_rule(chatml_model_dir: Path, tmp_path: Path) -> None:
    """A permanent error exits BAD_INPUT with its message; anything else FAILED, with the traceback."""
    untrainable = make_records(2)
    for record in untrainable:
        record["spans"] = []
    cmd, env = _cli(tmp_path, make_config(chatml_model_dir), untrainable)
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == ExitCode.BAD_INPUT == 2, bad.stderr[-2000:]
    assert "error: no trainable example in the train split" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stdout == ""

    (tmp_path / "data.jsonl").write_text("{not json\n")
    garbled = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert garbled.returncode == ExitCode.BAD_INPUT, garbled.stderr[-2000:]
    assert "data.jsonl:1: not valid JSON" in garbled.stderr

    if torch.cuda.is_available():
        return
    # Asking for a GPU the machine lacks is not the job's fault: another worker may have one.
    cmd, env = _cli(tmp_path, make_config(chatml_model_dir, resources={"device": "cuda"}), make_records(2))
    failed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == ExitCode.FAILED == 1, failed.stderr[-2000:]
    assert "Traceback" in failed.stderr and "no CUDA device is available" in failed.stderr.splitlines()[-1]
