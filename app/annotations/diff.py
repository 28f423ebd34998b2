"""The difference between two span sets of one trajectory.

Definitions (both sets valid: sorted, non-overlapping):

- **unchanged**: a span present in both with the same ``(message, start, end, kind)``.
- **changed**: a pair (old span, new span), neither unchanged, in the same message and sharing at
  least one character, whose kind and/or bounds differ. Each span is in at most one pair: among all
  overlapping candidate pairs, the one with the largest shared length is taken first (ties: lower
  old index, then lower new index), greedily. A split thus shows as one changed span (the larger
  part) plus one added; a merge as one changed plus one removed.
- **removed**: old spans in no pair; **added**: new spans in no pair.

Indexes are positions in the respective revision's span list.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from contract.spans import Span


def _key(s: Span) -> tuple[int, int, int, str]:
    return s["message"], s["start"], s["end"], s["kind"]


def _overlapping_pairs(old: list[tuple[int, Span]], new: list[tuple[int, Span]]) -> list[tuple[int, int, int]]:
    """(shared chars, old index, new index) of every overlapping pair; both lists sorted, one message."""
    pairs = []
    i = j = 0
    while i < len(old) and j < len(new):
        (oi, o), (nj, n) = old[i], new[j]
        shared = min(o["end"], n["end"]) - max(o["start"], n["start"])
        if shared > 0:
            pairs.append((shared, oi, nj))
        if o["end"] <= n["end"]:
            i += 1
        else:
            j += 1
    return pairs


def diff_spans(old: list[Span], new: list[Span]) -> dict[str, Any]:
    """``{added, removed, changed, unchanged}`` from ``old`` to ``new`` (see the module docstring)."""
    new_index = {_key(s): j for j, s in enumerate(new)}
    same = {i: new_index[_key(s)] for i, s in enumerate(old) if _key(s) in new_index}
    kept_new = set(same.values())

    by_message_old: dict[int, list[tuple[int, Span]]] = defaultdict(list)
    by_message_new: dict[int, list[tuple[int, Span]]] = defaultdict(list)
    for i, s in enumerate(old):
        if i not in same:
            by_message_old[s["message"]].append((i, s))
    for j, s in enumerate(new):
        if j not in kept_new:
            by_message_new[s["message"]].append((j, s))

    candidates = []
    for m, olds in by_message_old.items():
        candidates += _overlapping_pairs(olds, by_message_new.get(m, []))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    paired_old: dict[int, int] = {}
    paired_new: set[int] = set()
    for _, i, j in candidates:
        if i not in paired_old and j not in paired_new:
            paired_old[i] = j
            paired_new.add(j)

    changed = []
    for i in sorted(paired_old):
        j = paired_old[i]
        fields = [f for f in ("kind", "start", "end") if old[i][f] != new[j][f]]
        changed.append({"from_index": i, "to_index": j, "before": old[i], "after": new[j], "fields": fields})
    removed = [{"index": i, "span": s} for i, s in enumerate(old) if i not in same and i not in paired_old]
    added = [{"index": j, "span": s} for j, s in enumerate(new) if j not in kept_new and j not in paired_new]
    return {"added": added, "removed": removed, "changed": changed, "unchanged": len(same)}
