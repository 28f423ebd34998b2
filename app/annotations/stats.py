"""Segmenter quality: the automatic spans measured against what annotators approved.

For each approved trajectory whose revision 1 came from the segmenter (source ``auto``), the
automatic spans (revision 1) are compared with the final spans (the current revision), per input
format and per span kind k, at the character level:

- ``auto_chars``: characters the segmenter labelled k; ``final_chars``: characters labelled k in
  the final set; ``agree_chars``: characters labelled k in both (same message, same offsets).
- precision = agree / auto, recall = agree / final, F1 their harmonic mean (null when a
  denominator is 0).
- ``exact_spans``: automatic spans of kind k found unchanged (message, start, end, kind) in the
  final set, out of ``auto_spans`` (and ``final_spans`` for reference).

``touched`` counts trajectories whose current revision is above 1 (an annotator wrote spans).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from contract.spans import KINDS, Span


def _intervals(spans: list[Span], kind: str) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for s in spans:
        if s["kind"] == kind:
            out[s["message"]].append((s["start"], s["end"]))
    for v in out.values():
        v.sort()
    return out


def _shared(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> int:
    """Characters covered by both lists of sorted, non-overlapping intervals."""
    i = j = total = 0
    while i < len(a) and j < len(b):
        total += max(0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return total


@dataclass
class _Counts:
    auto_chars: int = 0
    final_chars: int = 0
    agree_chars: int = 0
    auto_spans: int = 0
    final_spans: int = 0
    exact_spans: int = 0

    def add(self, other: _Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def scores(self) -> dict[str, Any]:
        p = self.agree_chars / self.auto_chars if self.auto_chars else None
        r = self.agree_chars / self.final_chars if self.final_chars else None
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (
            0.0 if p is not None and r is not None else None)
        return {**self.__dict__, "precision": p, "recall": r, "f1": f1}


@dataclass
class _Group:
    trajectories: int = 0
    touched: int = 0
    kinds: dict[str, _Counts] = field(default_factory=lambda: {k: _Counts() for k in KINDS})


def compare(auto: list[Span], final: list[Span]) -> dict[str, _Counts]:
    """Per-kind counts for one trajectory."""
    final_keys = {(s["message"], s["start"], s["end"], s["kind"]) for s in final}
    out = {}
    for kind in KINDS:
        a, f = _intervals(auto, kind), _intervals(final, kind)
        c = _Counts()
        c.auto_chars = sum(e - s for v in a.values() for s, e in v)
        c.final_chars = sum(e - s for v in f.values() for s, e in v)
        c.agree_chars = sum(_shared(v, f.get(m, [])) for m, v in a.items())
        c.auto_spans = sum(1 for s in auto if s["kind"] == kind)
        c.final_spans = sum(1 for s in final if s["kind"] == kind)
        c.exact_spans = sum(1 for s in auto if s["kind"] == kind
                            and (s["message"], s["start"], s["end"], s["kind"]) in final_keys)
        out[kind] = c
    return out


def segmenter_quality(rows: Iterable[tuple[str, list[Span], list[Span], int]]) -> dict[str, Any]:
    """``rows``: (format, auto spans, final spans, current revision) per approved trajectory."""
    overall = _Group()
    groups: dict[str, _Group] = defaultdict(_Group)
    for fmt, auto, final, revision in rows:
        counts = compare(auto, final)
        for g in (overall, groups[fmt]):
            g.trajectories += 1
            g.touched += revision > 1
            for kind, c in counts.items():
                g.kinds[kind].add(c)
    return {
        "trajectories": overall.trajectories,
        "touched": overall.touched,
        "overall": {k: c.scores() for k, c in overall.kinds.items()},
        "formats": [
            {"format": fmt, "trajectories": g.trajectories, "touched": g.touched,
             "kinds": {k: c.scores() for k, c in g.kinds.items()}}
            for fmt, g in sorted(groups.items())
        ],
    }
