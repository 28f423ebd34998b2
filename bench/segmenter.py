"""Segmenter accuracy on real agent logs: token-weighted span F1 per family against hand-labelled gold.

Walks every folder `tests/data/logs/<family>/`; each `*.json` there is `{"request": <a POST
/v1/trajectories body>, "gold_spans": [{message, start, end, kind}], "note": …}`. The request's
format fields go through `contract.formats.parse` as the API passes them (the envelope fields are
dropped, `task` reaches react and smolagents), which gives the canonical messages and the auto spans.

Scoring. The canonical text of every message is cut into tokens by the regex `\\w+|[^\\w\\s]` (words,
and each other non-space character on its own; whitespace is never a token, so where a span
boundary falls inside whitespace does not count). Each token gets the kind of the span that covers
its first character, or `context` when none does, once from the gold spans and once from the auto
spans. For a set of kinds K, TP = tokens whose gold and auto kinds agree and lie in K, FP = tokens
whose auto kind is in K and differs from gold, FN = tokens whose gold kind is in K and differs from
auto; F1 = 2·TP / (2·TP + FP + FN). The headline F1 is over the supervised kinds (reason, action)
together; the table also shows each kind alone. Families are summed token by token (a long log
weighs more).

Run: `.venv/bin/python bench/segmenter.py` (no database, no network); prints a Markdown table.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contract.formats import FORMATS, ParsedTrajectory, parse  # noqa: E402
from contract.spans import Message, Span  # noqa: E402

LOGS = ROOT / "tests" / "data" / "logs"
TOKEN = re.compile(r"\w+|[^\w\s]")
SUPERVISED = ("reason", "action")
KINDS = ("reason", "action", "observation")
# The envelope of POST /v1/trajectories (app.trajectories.service): not passed to the format parser.
_ENVELOPE = {"format", "source", "external_id", "teacher_model", "task", "task_type", "outcome",
             "reward", "tags", "metadata", "spans"}


def format_payload(request: dict[str, Any]) -> dict[str, Any]:
    """The fields the API hands to `contract.formats.parse` for this request body."""
    payload = {k: v for k, v in request.items() if k not in _ENVELOPE}
    if request.get("format") in ("react", "smolagents") and request.get("task") is not None:
        payload.setdefault("task", request["task"])
    return payload


def token_labels(messages: Sequence[Message], spans: Iterable[Span]) -> list[str]:
    """The kind (or "context") of every token of every message, in order."""
    by_message: dict[int, list[Span]] = {}
    for span in spans:
        by_message.setdefault(span["message"], []).append(span)
    labels: list[str] = []
    for i, msg in enumerate(messages):
        own = sorted(by_message.get(i, []), key=lambda s: s["start"])
        k = 0
        for m in TOKEN.finditer(msg["text"]):
            while k < len(own) and own[k]["end"] <= m.start():
                k += 1
            inside = k < len(own) and own[k]["start"] <= m.start()
            labels.append(str(own[k]["kind"]) if inside else "context")
    return labels


@dataclass
class Counts:
    """Token counts per kind set: tp/fp/fn keyed by the kind (or "supervised")."""

    tp: dict[str, int] = field(default_factory=dict)
    fp: dict[str, int] = field(default_factory=dict)
    fn: dict[str, int] = field(default_factory=dict)
    gold_tokens: int = 0
    logs: int = 0

    def add(self, gold: list[str], auto: list[str]) -> None:
        self.logs += 1
        self.gold_tokens += sum(g in SUPERVISED for g in gold)
        for key, kinds in [("supervised", SUPERVISED)] + [(k, (k,)) for k in KINDS]:
            tp = sum(g == a and g in kinds for g, a in zip(gold, auto, strict=True))
            fp = sum(a in kinds and a != g for g, a in zip(gold, auto, strict=True))
            fn = sum(g in kinds and g != a for g, a in zip(gold, auto, strict=True))
            self.tp[key] = self.tp.get(key, 0) + tp
            self.fp[key] = self.fp.get(key, 0) + fp
            self.fn[key] = self.fn.get(key, 0) + fn

    def f1(self, key: str = "supervised") -> float:
        tp, fp, fn = self.tp.get(key, 0), self.fp.get(key, 0), self.fn.get(key, 0)
        return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


@dataclass
class GoldLog:
    family: str
    path: Path
    request: dict[str, Any]
    gold_spans: list[Span]


def load_logs(root: Path = LOGS) -> list[GoldLog]:
    """Every gold log under `root` (`<family>/*.json` in the shape above; other files are not gold
    logs of this shape and are skipped), family by family, in name order."""
    logs = []
    for path in sorted(root.glob("*/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("request"), dict) and isinstance(
                data.get("gold_spans"), list):
            logs.append(GoldLog(path.parent.name, path, data["request"], data["gold_spans"]))
    return logs


def parse_log(log: GoldLog) -> ParsedTrajectory:
    return parse(log.request["format"], format_payload(log.request))


def score(logs: Iterable[GoldLog]) -> dict[str, Counts]:
    """Counts per family for the logs whose format this build knows (others are skipped)."""
    out: dict[str, Counts] = {}
    for log in logs:
        if log.request.get("format") not in FORMATS:
            continue
        parsed = parse_log(log)
        gold = token_labels(parsed.messages, log.gold_spans)
        auto = token_labels(parsed.messages, parsed.spans)
        out.setdefault(log.family, Counts()).add(gold, auto)
    return out


def main() -> None:
    from bench.common import print_table

    families = score(load_logs())
    total = Counts()
    rows: list[list[object]] = []
    for family, c in sorted(families.items()):
        rows.append([family, c.logs, c.gold_tokens, f"{c.f1():.3f}", *(f"{c.f1(k):.3f}" for k in KINDS)])
        total.logs += c.logs
        total.gold_tokens += c.gold_tokens
        for d_total, d in ((total.tp, c.tp), (total.fp, c.fp), (total.fn, c.fn)):
            for k, v in d.items():
                d_total[k] = d_total.get(k, 0) + v
    rows.append(["all", total.logs, total.gold_tokens, f"{total.f1():.3f}", *(f"{total.f1(k):.3f}" for k in KINDS)])
    print_table("Segmenter span F1 against hand-labelled gold (token-weighted)",
                ["family", "logs", "gold reason+action tokens", "F1 reason+action", "F1 reason", "F1 action",
                 "F1 observation"], rows)


if __name__ == "__main__":
    main()
