"""Teacher/student tokenizer compatibility, and loading models: a frozen teacher, and a reference that
cannot be loaded failing as a permanent `ModelLoadError` that names it and says how it was looked up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from contract.vocab import (
    TokenizerMismatch,
    check_tokenizer_compatibility,
    compare_tokenizers,
    real_vocab_size,
)
from tests.worker.test_recipe import make_config, make_records
from worker.context import ModelLoadError, is_permanent
from worker.training.models import load_teacher
from worker.training.tiny import build_tiny_model
from worker.training.trainer import run_training


def test_same_vocabulary_with_padded_embeddings_is_compatible(tiny_model_dir: Path, padded_teacher_dir: Path) -> None:
    check_tokenizer_compatibility(tiny_model_dir, padded_teacher_dir)
    check_tokenizer_compatibility(tiny_model_dir / "tokenizer.json", padded_teacher_dir / "tokenizer.json")
    student = AutoTokenizer.from_pretrained(tiny_model_dir)
    check_tokenizer_compatibility(student, AutoTokenizer.from_pretrained(padded_teacher_dir))
    check_tokenizer_compatibility(student, padded_teacher_dir)


def test_different_vocabularies_are_refused_with_details(tiny_model_dir: Path, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "other", ["zebra quartz " * 30, "xylophone jazz"], vocab_size=300,
                             hidden_size=16, num_heads=2, intermediate_size=32)
    with pytest.raises(TokenizerMismatch) as err:
        check_tokenizer_compatibility(tiny_model_dir, other)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "vocabulary sizes differ" in message and "token ids map to different tokens" in message
    assert "first: id " in message
    with pytest.raises(TokenizerMismatch):
        check_tokenizer_compatibility(AutoTokenizer.from_pretrained(tiny_model_dir),
                                      AutoTokenizer.from_pretrained(other))


def test_same_vocabulary_different_merges_or_specials_are_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    merges = data["model"]["merges"]
    data["model"]["merges"] = [merges[1], merges[0], *merges[2:]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    problems = compare_tokenizers(tiny_model_dir, tmp_path / "tokenizer.json")
    assert len(problems) == 1 and "different BPE merges" in problems[0] and "#0" in problems[0]

    data = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    data["added_tokens"][1]["content"] = "<|endoftext|>"  # eos renamed: the id maps to another token
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    problems = compare_tokenizers(tiny_model_dir, tmp_path / "tokenizer.json")
    assert any("id 1: student '</s>' vs teacher '<|endoftext|>'" in p for p in problems)
    assert any(p.startswith("special tokens differ") for p in problems)


def test_real_vocab_size(tiny_model_dir: Path, padded_teacher_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert real_vocab_size(tok) == len(tok) == real_vocab_size(tiny_model_dir)
    assert real_vocab_size(padded_teacher_dir) == len(tok)


def test_compatibility_check_imports_neither_torch_nor_transformers() -> None:
    code = ("import sys, contract.vocab as t; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))[:3]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_load_teacher_is_frozen(padded_teacher_dir: Path) -> None:
    teacher = load_teacher(padded_teacher_dir, "cpu", torch.float32)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert next(teacher.parameters()).dtype == torch.float32


def test_a_missing_student_fails_the_run_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "models" / "no-such-student"
    with pytest.raises(ModelLoadError) as err:
        run_training(make_config(missing), make_records(2), tmp_path / "run")
    message = str(err.value)
    assert f"cannot load the student tokenizer {str(missing)!r}" in message
    assert "local folder, which does not exist" in message and "DISTILLERY_MODELS_ROOT" in message
    assert is_permanent(err.value) and isinstance(err.value.__cause__, OSError)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_unknown_hub_id_offline_names_it_and_the_offline_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_teacher("distillery-tests/no-such-teacher")
    message = str(err.value)
    assert "cannot load the teacher model 'distillery-tests/no-such-teacher'" in message
    assert "hub id" in message and "HF_HUB_OFFLINE is set" in message
    assert isinstance(err.value.__cause__, OSError)


def test_an_unreadable_model_folder_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    (broken / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ModelLoadError) as err:
        load_teacher(broken)
    assert f"{str(broken)!r}: tried as a local folder, which exists but could not be read" in str(err.value)
