"""Dataset records → rendered training/eval examples, and the batching arithmetic of one optimizer step.

Records are the dataset JSONL rows (`contract.spans.DatasetRecord`: `id`, `messages`, `spans`, `tools`,
`complexity`, `split`).
Each is rendered once with the student tokenizer (`render.render_examples`) into one example, or more when the
chat template rewrites history (a turn trained in an example of its own). The train split is rendered in the
job's loss mode (flat: every assistant token), the eval split always in span mode, so span and flat runs are
scored on the same tokens. Records left with no supervised token, too long for any window, or that cannot be
rendered faithfully are skipped and counted per reason, never trained; what rendering split, dropped or
truncated is summed per split (`PreparedData.report`, the job's ``data`` metrics).

One optimizer step consumes a GLOBAL batch of micro_batch × grad_accum × world_size examples drawn by the
curriculum sampler (identically on every rank). Rank r takes the r-th contiguous slice and splits it into
`grad_accum` micro-batches. Losses are normalised by the supervised-token counts of the whole global batch
(`window_counts`), so the gradient equals that of the window mean, whatever the split.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.spans import DatasetRecord
from worker.context import BadJobInput
from worker.training.render import (
    ACTION,
    REASON,
    Mode,
    RenderedExample,
    RenderError,
    RenderStats,
    Syntax,
    render_examples,
)


@dataclass
class Split:
    """The rendered examples of one split with their complexities and ids (aligned lists)."""

    examples: list[RenderedExample] = field(default_factory=list)
    complexities: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)


@dataclass
class PreparedData:
    train: Split
    eval: Split
    skipped: dict[str, int]  # e.g. {"train.no_supervised_tokens": 2, "eval.render_error": 1}
    render_errors: list[str]  # first few error messages, for the job log
    stats: dict[str, RenderStats] = field(default_factory=dict)  # per split: what rendering split/dropped

    def report(self) -> dict[str, Any]:
        """Per split: records, examples, skipped records by reason, and what rendering split or dropped."""
        out: dict[str, Any] = {}
        for name, split in (("train", self.train), ("eval", self.eval)):
            skipped = {k.split(".", 1)[1]: v for k, v in self.skipped.items() if k.startswith(name + ".")}
            stats = self.stats.get(name, RenderStats()).as_dict()
            out[name] = {"examples": len(split), "skipped_records": skipped,
                         **{k: v for k, v in stats.items() if k != "examples"}}
        return out


def read_records(path: Path) -> list[DatasetRecord]:
    """Read a dataset JSONL export (one record per non-empty line); a line that is not JSON is ``BadJobInput``."""
    records: list[DatasetRecord] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BadJobInput(f"{path}:{lineno}: not valid JSON: {exc}") from exc
    return records


def prepare_examples(records: Iterable[DatasetRecord], tokenizer: Any, *, max_seq_len: int,
                     mode: Mode = "span", syntax: Syntax = "native") -> PreparedData:
    """Render every record into its split ("train" when the record has none); the train split in `mode`; tool
    calls in `syntax` (`render.render_examples`)."""
    splits = {"train": Split(), "eval": Split()}
    stats = {"train": RenderStats(), "eval": RenderStats()}
    skipped: Counter[str] = Counter()
    errors: list[str] = []
    for record in records:
        split = record.get("split") or "train"
        if split not in splits:
            skipped[f"{split}.unknown_split"] += 1
            continue
        rid = str(record.get("id", len(splits[split]) + skipped.total()))
        try:
            result = render_examples(
                record["messages"],
                record.get("spans") or [],
                tokenizer,
                max_seq_len=max_seq_len,
                tools=record.get("tools"),
                example_id=rid,
                mode=mode if split == "train" else "span",
                syntax=syntax,
            )
        except (RenderError, KeyError, TypeError) as exc:
            skipped[f"{split}.render_error"] += 1
            if len(errors) < 10:
                errors.append(f"{rid}: {exc}")
            continue
        stats[split].add(result.stats)
        if result.skipped is not None:
            skipped[f"{split}.{result.skipped}"] += 1
            continue
        for example in result.examples:
            splits[split].examples.append(example)
            splits[split].complexities.append(float(record.get("complexity") or 0.0))
            splits[split].ids.append(example.id or rid)
    return PreparedData(splits["train"], splits["eval"], dict(skipped), errors, stats)


def supervised_counts(example: RenderedExample) -> tuple[int, int]:
    """(reason, action) positions trained in this example: kinds of tokens 1.. (shifted labels)."""
    kinds = example.kinds[1:]
    return kinds.count(REASON), kinds.count(ACTION)


def window_counts(examples: Sequence[RenderedExample], *, mode: str, has_teacher: bool) -> tuple[int, int]:
    """Supervised (reason, action) token counts of a whole accumulation window, as the losses report them.

    In flat mode every supervised token is one kind: reported as reason with a teacher (KL), else action (CE).
    """
    n_reason = n_action = 0
    for example in examples:
        r, a = supervised_counts(example)
        n_reason += r
        n_action += a
    if mode == "flat":
        total = n_reason + n_action
        return (total, 0) if has_teacher else (0, total)
    return n_reason, n_action


def rank_slice(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The contiguous slice of a global batch that `rank` trains on."""
    per_rank = len(batch) // world_size
    return list(batch[rank * per_rank : (rank + 1) * per_rank])


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def num_training_steps(n_train: int, global_batch: int, *, max_steps: int, epochs: float | None) -> int:
    """max_steps, or fewer when `epochs` passes over the train split take fewer steps."""
    if epochs is None:
        return max_steps
    import math

    return max(1, min(max_steps, math.ceil(epochs * n_train / global_batch)))
