"""The student/teacher tokenizer compatibility check (DESIGN §5 "Teacher signal").

KL needs one shared vocabulary. `check_tokenizer_compatibility` compares the token → id maps
(added tokens included) and, for BPE, the merge lists; it raises `TokenizerMismatch` saying what
differs (vocabulary sizes, the first differing ids, special tokens). Embedding matrices padded to
different sizes are fine: the losses compare logits on the first `real_vocab_size(tokenizer)` rows.
Torch-free and transformers-free: the API runs the same check at submit time on `tokenizer.json`
files, the worker on loaded tokenizers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class TokenizerMismatch(ValueError):
    """Student and teacher tokenizers do not share a vocabulary; KL between them is meaningless."""


def _tokenizer_json(source: Any) -> dict[str, Any] | None:
    """tokenizer.json content of a path (file or model dir) or of a loaded fast tokenizer."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        return json.loads(path.read_text(encoding="utf-8"))
    backend = getattr(source, "backend_tokenizer", None)
    if backend is not None:
        return json.loads(backend.to_str())
    return None


def _tokenizer_config(source: Any) -> dict[str, Any]:
    if isinstance(source, str | Path):
        path = Path(source)
        cfg = (path if path.is_dir() else path.parent) / "tokenizer_config.json"
        return json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
    return {}


def vocab_map(source: Any) -> dict[str, int]:
    """token → id, added tokens included, from a path or a loaded tokenizer (torch-free)."""
    data = _tokenizer_json(source)
    if data is None:  # a slow tokenizer object
        return dict(source.get_vocab())
    model = data.get("model", {})
    raw = model.get("vocab", {})
    # Unigram stores [[piece, score], ...] with id = position; BPE/WordPiece a token → id map
    vocab = {piece: i for i, (piece, _score) in enumerate(raw)} if isinstance(raw, list) else dict(raw)
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = int(added["id"])
    return vocab


def _merges(source: Any) -> list[str] | None:
    data = _tokenizer_json(source)
    if data is None or data.get("model", {}).get("type") != "BPE":
        return None
    # merges are "a b" strings (old format) or ["a", "b"] pairs (tokenizers ≥ 0.20)
    return [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]


def special_tokens(source: Any) -> dict[str, str]:
    """Named special tokens (bos/eos/pad/unk) plus added tokens flagged special, as name → token."""
    out: dict[str, str] = {}
    if isinstance(source, str | Path):
        cfg = _tokenizer_config(source)
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = cfg.get(name)
            if isinstance(value, dict):
                value = value.get("content")
            if value:
                out[name] = str(value)
    else:
        for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
            value = getattr(source, name, None)
            if value:
                out[name] = str(value)
    data = _tokenizer_json(source)
    for added in (data or {}).get("added_tokens", []):
        if added.get("special"):
            out[f"special[{added['id']}]"] = added["content"]
    return out


def real_vocab_size(tokenizer: Any) -> int:
    """Size of the tokenizer's real vocabulary (added tokens included): `len(tokenizer)`.

    Also accepts a tokenizer.json / model dir path (then: highest id + 1 of the vocabulary map).
    """
    if isinstance(tokenizer, str | Path):
        vocab = vocab_map(tokenizer)
        return max(vocab.values(), default=-1) + 1
    return len(tokenizer)


def compare_tokenizers(student: Any, teacher: Any) -> list[str]:
    """Human-readable differences between two tokenizers' vocabularies (empty list = compatible).

    `student`/`teacher`: tokenizer.json paths, model directories or loaded tokenizers. Torch-free.
    """
    s_vocab, t_vocab = vocab_map(student), vocab_map(teacher)
    problems: list[str] = []
    if len(s_vocab) != len(t_vocab):
        problems.append(f"vocabulary sizes differ: student {len(s_vocab)} tokens, teacher {len(t_vocab)} tokens")
    if s_vocab != t_vocab:
        s_by_id = {i: tok for tok, i in s_vocab.items()}
        t_by_id = {i: tok for tok, i in t_vocab.items()}
        diff_ids = sorted(i for i in set(s_by_id) | set(t_by_id) if s_by_id.get(i) != t_by_id.get(i))
        shown = ", ".join(f"id {i}: student {s_by_id.get(i)!r} vs teacher {t_by_id.get(i)!r}" for i in diff_ids[:5])
        problems.append(f"{len(diff_ids)} token ids map to different tokens (first: {shown})")
    else:
        s_merges, t_merges = _merges(student), _merges(teacher)
        if s_merges is not None and t_merges is not None and s_merges != t_merges:
            at = next((i for i, (a, b) in enumerate(zip(s_merges, t_merges, strict=False)) if a != b),
                      min(len(s_merges), len(t_merges)))
            problems.append(
                f"same vocabulary but different BPE merges ({len(s_merges)} vs {len(t_merges)}; first "
                f"difference at merge #{at}): the same text tokenizes differently"
            )
    if problems:
        s_special, t_special = special_tokens(student), special_tokens(teacher)
        if s_special != t_special:
            # named tokens (bos/eos/...) are unknown for a bare tokenizer.json: compare known ones only
            keys = sorted(k for k in set(s_special) | set(t_special)
                          if k.startswith("special[") or (k in s_special and k in t_special))
            diffs = [f"{k}: {s_special.get(k)!r} vs {t_special.get(k)!r}" for k in keys
                     if s_special.get(k) != t_special.get(k)]
            if diffs:
                problems.append("special tokens differ: " + "; ".join(diffs[:8]))
    return problems


def check_tokenizer_compatibility(student_tok_or_path: Any, teacher_tok_or_path: Any) -> None:
    """Raise TokenizerMismatch (a ValueError) when student and teacher vocabularies differ."""
    problems = compare_tokenizers(student_tok_or_path, teacher_tok_or_path)
    if problems:
        raise TokenizerMismatch(
            "teacher and student tokenizers are incompatible; KL distillation needs a shared vocabulary "
            "(use CE-only training or a teacher from the same family): " + "; ".join(problems)
        )
