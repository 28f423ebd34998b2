"""The job config rejects what the trainer could not run, and stays torch-free."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from contract.job_config import DistillConfig, EvaluateConfig, LossConfig, TrainingConfig


def _error_locs(exc: ValidationError) -> list[tuple]:
    return [tuple(e["loc"]) for e in exc.errors()]


def test_defaults_are_valid_and_round_trip() -> None:
    cfg = DistillConfig()
    assert cfg.loss.teacher_signal == "none"
    again = DistillConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    ev = EvaluateConfig()
    assert EvaluateConfig.model_validate_json(ev.model_dump_json()) == ev


def test_full_config_round_trips_through_json() -> None:
    raw = {
        "student_model": "/models/student",
        "teacher_model": "/models/teacher",
        "loss": {"mode": "span", "weighting": "learnable", "alpha": 0.5, "gamma": 0.2, "pcgrad": True},
        "curriculum": {
            "schedule": "competence",
            "initial_competence": 0.2,
            "competence_steps": 100,
            "seed": 3,
        },
        "training": {
            "max_steps": 10,
            "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]},
            "bf16": "auto",
        },
        "resources": {"device": "cuda", "gpus": 2},
    }
    cfg = DistillConfig.model_validate(raw)
    assert cfg.loss.teacher_signal == "online"  # implied by teacher_model
    dumped = json.loads(cfg.model_dump_json())
    assert DistillConfig.model_validate(dumped) == cfg
    assert dumped["training"]["lora"]["target_modules"] == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"learning_rate": 1e-4}, ("learning_rate",)),
        ({"loss": {"alpah": 1.0}}, ("loss", "alpah")),
        ({"training": {"lora": {"rank": 8}}}, ("training", "lora", "rank")),
        ({"resources": {"tpus": 2}}, ("resources", "tpus")),
        ({"curriculum": {"schedule": "sorted", "order": "asc"}}, ("curriculum", "order")),
    ],
)
def test_unknown_keys_are_rejected_with_their_path(raw: dict, loc: tuple) -> None:
    with pytest.raises(ValidationError) as exc:
        DistillConfig.model_validate(raw)
    assert loc in _error_locs(exc.value)
    assert exc.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"training": {"lr": 0}}, ("training", "lr")),
        ({"training": {"micro_batch_size": 0}}, ("training", "micro_batch_size")),
        ({"training": {"min_lr_ratio": 1.5}}, ("training", "min_lr_ratio")),
        ({"loss": {"temperature": 0.0}}, ("loss", "temperature")),
        ({"loss": {"alpha": -1}}, ("loss", "alpha")),
        ({"loss": {"mode": "token"}}, ("loss", "mode")),
        ({"curriculum": {"initial_competence": 0}}, ("curriculum", "initial_competence")),
        ({"resources": {"gpus": 0}}, ("resources", "gpus")),
        ({"training": {"bf16": "yes"}}, ("training", "bf16")),
    ],
)
def test_ranges_are_enforced(raw: dict, loc: tuple) -> None:
    with pytest.raises(ValidationError) as exc:
        DistillConfig.model_validate(raw)
    assert any(error_loc[: len(loc)] == loc for error_loc in _error_locs(exc.value)), exc.value


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"loss": {"teacher_signal": "online"}}, "needs teacher_model"),
        ({"loss": {"mode": "flat", "weighting": "learnable"}}, "single loss term"),
        ({"loss": {"mode": "flat", "pcgrad": True}}, "pcgrad"),
        ({"loss": {"alpha": 0, "beta": 0}}, "nothing to train"),
        ({"training": {"max_steps": 5, "warmup_steps": 6}}, "warmup_steps"),
        ({"training": {"bf16": True}, "resources": {"device": "cpu"}}, "CUDA"),
    ],
)
def test_cross_field_rules(raw: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        DistillConfig.model_validate(raw)
    assert needle in str(exc.value)


def test_explicit_teacher_signal_none_is_kept() -> None:
    cfg = DistillConfig.model_validate({"teacher_model": "t", "loss": {"teacher_signal": "none"}})
    assert cfg.loss.teacher_signal == "none"


def test_every_field_documents_itself() -> None:
    for model in (DistillConfig, EvaluateConfig, LossConfig, TrainingConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_importing_schemas_does_not_import_torch() -> None:
    code = (
        "import sys, contract.job_config as s; s.DistillConfig(); "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"contract.job_config imported {proc.stdout.strip()} {proc.stderr[-500:]}"
