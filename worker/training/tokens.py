"""Character spans → token kinds: the fast tokenizer's offsets, the majority rule, and span validation.

A token takes the kind of the char range (span, end of turn) holding the majority of its characters — code
points, not bytes — ties going to the later range; a token touching no range is NONE (kind 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from worker.training.template import RenderError

KIND_CODES = {"reason": 1, "action": 2, "observation": 0}


def encode(tokenizer: Any, text: str) -> tuple[list[int], np.ndarray]:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: same ids/char offsets, less overhead
        enc = backend.encode(text, add_special_tokens=False)
        return enc.ids, np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(out["input_ids"]), np.asarray(out["offset_mapping"], dtype=np.int64).reshape(-1, 2)


def token_kinds(offsets: np.ndarray, bounds: list[tuple[int, int, int]]) -> np.ndarray:
    """Kinds per token from non-overlapping char ranges (start, end, kind).

    Majority rule: the range covering most of a token's characters wins, ties go to the later range.
    Vectorised for the common case (a token touches ≤ 1 range); loops only at boundaries.
    """
    n = len(offsets)
    kinds = np.zeros(n, dtype=np.int64)
    bounds = sorted(b for b in bounds if b[1] > b[0])
    if not bounds or n == 0:
        return kinds
    b_start = np.fromiter((b[0] for b in bounds), dtype=np.int64, count=len(bounds))
    b_end = np.fromiter((b[1] for b in bounds), dtype=np.int64, count=len(bounds))
    b_kind = np.fromiter((b[2] for b in bounds), dtype=np.int64, count=len(bounds))
    t_start, t_end = offsets[:, 0], offsets[:, 1]
    lo = np.searchsorted(b_end, t_start, side="right")  # first range ending after the token start
    hi = np.searchsorted(b_start, t_end, side="left")  # ranges starting before the token end
    hi = np.where(t_end > t_start, hi, lo)  # zero-width tokens touch nothing
    n_touch = hi - lo
    one = n_touch == 1
    kinds[one] = b_kind[lo[one]]
    for t in np.nonzero(n_touch > 1)[0]:
        best, best_len = 0, -1
        for j in range(lo[t], hi[t]):
            overlap = min(t_end[t], b_end[j]) - max(t_start[t], b_start[j])
            if overlap >= best_len:  # ">=": ties go to the later span
                best, best_len = j, overlap
        kinds[t] = b_kind[best]
    return kinds


def group_spans(
    messages: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]]
) -> list[list[Mapping[str, Any]]]:
    by_message: list[list[Mapping[str, Any]]] = [[] for _ in messages]
    for s in spans:
        i = s["message"]
        if not 0 <= i < len(messages):
            raise RenderError(f"span {s} points at message {i}, outside 0..{len(messages) - 1}")
        if s["kind"] not in KIND_CODES:
            raise RenderError(f"span {s} has unknown kind {s['kind']!r}")
        if not 0 <= s["start"] < s["end"] <= len(messages[i]["text"]):
            raise RenderError(f"span {s} is outside message {i} text (length {len(messages[i]['text'])})")
        by_message[i].append(s)
    for i, group in enumerate(by_message):
        group.sort(key=lambda s: s["start"])
        for a, b in pairwise(group):
            if b["start"] < a["end"]:
                raise RenderError(f"spans overlap in message {i}: {a} and {b}")
    return by_message
