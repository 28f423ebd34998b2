"""Teacher/student tokenizer compatibility and teacher loading."""

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
from worker.training.models import load_teacher
from worker.training.tiny import build_tiny_model


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
