"""The statistics stored with a snapshot, shaped from the repository's SQL aggregates.

``build_stats`` returns::

    {"n_items", "n_messages", "n_candidates", "n_dropped_duplicates", "n_capped",
     "by_split": {"train": n, "eval": n}, "by_source": {...}, "by_task_type": {...}, "by_outcome": {...},
     "spans": {kind: {"count": n, "chars": n}} for every kind,
     "complexity": {"min", "max", "mean", "histogram": {"edges": [11 floats], "counts": [10 ints]}}}

A missing task_type counts under ``"(none)"``. The histogram has 10 equal bins over the selected
``complexity_score`` range; bin i holds scores with ``floor(10 * normalized) == i`` (the maximum
falls in the last bin; a zero-width range puts everything in bin 0).
"""

from __future__ import annotations

from typing import Any

from contract.spans import KINDS

N_BINS = 10


def build_stats(raw: dict[str, Any], *, n_candidates: int, n_kept: int) -> dict[str, Any]:
    """``raw`` is ``repository.item_stats``; ``n_kept`` counts candidates left after dedupe."""
    lo, hi = raw["complexity_min"], raw["complexity_max"]
    width = (hi - lo) if lo is not None and hi is not None else 0.0
    edges = [lo + width * i / N_BINS for i in range(N_BINS + 1)] if lo is not None else []
    spans = raw["spans"]
    return {
        "n_items": raw["n_items"],
        "n_messages": raw["n_messages"],
        "n_candidates": n_candidates,
        "n_dropped_duplicates": n_candidates - n_kept,
        "n_capped": n_kept - raw["n_items"],
        "by_split": {"train": raw["by_split"].get("train", 0), "eval": raw["by_split"].get("eval", 0)},
        "by_source": raw["by_source"],
        "by_task_type": raw["by_task_type"],
        "by_outcome": raw["by_outcome"],
        "spans": {k: {"count": spans.get(k, (0, 0))[0], "chars": spans.get(k, (0, 0))[1]} for k in KINDS},
        "complexity": {
            "min": lo, "max": hi, "mean": raw["complexity_mean"],
            "histogram": {"edges": edges, "counts": [raw["bins"].get(i, 0) for i in range(N_BINS)]},
        },
    }
