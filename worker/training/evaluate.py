"""Evaluation of a student on rendered examples: per-kind NLL/accuracy, KL to the teacher, action exact match.

For every supervised position (shifted labels: the kind of token t+1 decides position t) we compute, on the
tokenizer's real vocabulary only:

- `reason.nll`, `reason.accuracy`, `action.nll`, `action.accuracy`: mean token cross-entropy and top-1
  accuracy against the trajectory's own tokens;
- `reason.kl_teacher`: mean KL(p_teacher ‖ p_student) at temperature 1 on reason tokens (when a teacher);
- `action.exact_match`: the fraction of action spans (maximal runs of consecutive action tokens) that greedy
  decoding reproduces token for token given the reference prefix. Greedy decoding reproduces the span iff
  the argmax at each of its positions equals the reference token when fed the reference prefix (by induction:
  as long as every earlier token matched, the decoder's input IS the reference prefix), so one teacher-forced
  forward pass scores every span exactly, without a generate loop. At most `exact_match_max` spans count.

Full-vocabulary logits are only computed at supervised positions, in chunks of `chunk_size`, as the model's
forward produces them (`logits.logits_fn`: the head plus the architecture's post-head transform).
`make_report` assembles {before, after, delta} for the run's eval report; `run_evaluation` is the whole
`evaluate` job (load, render the chosen split, score, write `RunDir.eval_report`). It raises the trainer's
errors: `ModelLoadError`, `TokenizerMismatch`, and `BadJobInput` when the split has nothing to score.
This module never imports the trainer (model loading lives in `models.py`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from contract.rundir import RunDir
from worker.context import BadJobInput
from worker.training.logits import logits_fn
from worker.training.losses import final_hidden_states
from worker.training.render import ACTION, REASON, RenderedExample, collate

if TYPE_CHECKING:
    from contract.job_config import EvaluateConfig
    from contract.spans import DatasetRecord


def hidden_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Final hidden states [B, T, H] of a causal LM (before the LM head), without [B, T, V] logits."""
    return final_hidden_states(model, batch["input_ids"], batch["attention_mask"])


@torch.no_grad()
def evaluate_examples(
    model: torch.nn.Module,
    examples: Sequence[RenderedExample],
    *,
    teacher: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    chunk_size: int = 1024,
    vocab_size: int | None = None,
    exact_match_max: int = 200,
    use_bf16: bool = False,
    pad_id: int = 0,
) -> dict[str, Any]:
    """Score `model` on `examples`; returns {"examples", "reason": {...}, "action": {...}}."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    sums = {k: {"nll": 0.0, "correct": 0, "count": 0} for k in ("reason", "action")}
    kl_sum, spans_seen, spans_matched = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        group = list(examples[start : start + batch_size])
        batch = {k: v.to(device) for k, v in collate(group, pad_id).items()}
        kinds = batch["kinds"][:, 1:]
        labels = batch["input_ids"][:, 1:]
        mask = (kinds == REASON) | (kinds == ACTION)
        rows, cols = mask.nonzero(as_tuple=True)  # row-major: positions in sequence order per example
        if rows.numel() == 0:
            continue
        with autocast:
            h = hidden_states(model, batch)[:, :-1][rows, cols]
            h_teacher = hidden_states(teacher, batch)[:, :-1][rows, cols] if teacher is not None else None
        head = logits_fn(model)  # the head plus the architecture's post-head transform, fp32
        teacher_head = logits_fn(teacher) if teacher is not None else None
        target = labels[rows, cols]
        kind = kinds[rows, cols]
        correct_all = torch.empty_like(target, dtype=torch.bool)
        for c in range(0, target.numel(), chunk_size):
            sl = slice(c, c + chunk_size)
            with autocast:
                logits = head(h[sl])
            logits = logits[:, :vocab_size] if vocab_size else logits
            logp = F.log_softmax(logits, dim=-1)
            nll = -logp.gather(1, target[sl, None]).squeeze(1)
            correct = logits.argmax(-1) == target[sl]
            correct_all[sl] = correct
            for name, code in (("reason", REASON), ("action", ACTION)):
                sel = kind[sl] == code
                sums[name]["nll"] += float(nll[sel].sum())
                sums[name]["correct"] += int(correct[sel].sum())
                sums[name]["count"] += int(sel.sum())
            if teacher_head is not None and h_teacher is not None:
                sel = kind[sl] == REASON
                if sel.any():
                    with autocast:
                        t_logits = teacher_head(h_teacher[sl][sel])
                    t_logits = t_logits[:, :vocab_size] if vocab_size else t_logits
                    t_logp = F.log_softmax(t_logits, dim=-1)
                    kl = (t_logp.exp() * (t_logp - logp[sel])).sum(-1)
                    kl_sum += float(kl.sum())
        matched, seen = _exact_match(rows, cols, kind, correct_all, budget=exact_match_max - spans_seen)
        spans_matched += matched
        spans_seen += seen
    if was_training:
        model.train()
    report: dict[str, Any] = {"examples": len(examples)}
    for name in ("reason", "action"):
        n = sums[name]["count"]
        report[name] = {
            "tokens": n,
            "nll": sums[name]["nll"] / n if n else None,
            "accuracy": sums[name]["correct"] / n if n else None,
        }
    if teacher is not None:
        n = sums["reason"]["count"]
        report["reason"]["kl_teacher"] = kl_sum / n if n else None
    report["action"]["spans"] = spans_seen
    report["action"]["exact_match"] = spans_matched / spans_seen if spans_seen else None
    return report


def _exact_match(
    rows: torch.Tensor, cols: torch.Tensor, kind: torch.Tensor, correct: torch.Tensor, *, budget: int
) -> tuple[int, int]:
    """(matched, seen) action spans: maximal runs of consecutive ACTION positions in one example."""
    matched = seen = 0
    prev_row = prev_col = -2
    run_ok: bool | None = None
    for r, c, k, ok in zip(rows.tolist(), cols.tolist(), kind.tolist(), correct.tolist(), strict=True):
        continues = k == ACTION and r == prev_row and c == prev_col + 1 and run_ok is not None
        if continues:
            run_ok = run_ok and ok
        else:
            if run_ok is not None and seen < budget:
                seen += 1
                matched += int(run_ok)
            run_ok = ok if k == ACTION else None
        prev_row, prev_col = r, c
    if run_ok is not None and seen < budget:
        seen += 1
        matched += int(run_ok)
    return matched, seen


def make_report(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """{before, after, delta}; delta = after − before for every numeric metric present in both."""

    def diff(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: diff(a[k], b[k]) for k in b if k in a}
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            return b - a
        return None

    return {"before": before, "after": after, "delta": diff(before, after) if before else None}


def run_evaluation(config: EvaluateConfig, records: Sequence[DatasetRecord], out_dir: Path) -> dict[str, Any]:
    """The `evaluate` job: score `config.student_model` on a split; writes and returns the eval report."""
    from worker.training.data import prepare_examples
    from worker.training.models import check_embedding_rows, load_model, load_teacher, load_tokenizers, resolve_device

    device = resolve_device(config.resources.device)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    tokenizer, vocab_size = load_tokenizers(config.student_model, config.teacher_model)
    data = prepare_examples(records, tokenizer, max_seq_len=config.max_seq_len, syntax=config.tool_call_syntax)
    splits = {"train": [data.train], "eval": [data.eval], "all": [data.train, data.eval]}[config.split]
    examples = [e for split in splits for e in split.examples][: config.max_examples]
    if not examples:
        raise BadJobInput(
            f"nothing to score: no usable example in the {config.split!r} split (skipped: {data.skipped})"
        )
    model = load_model(config.student_model, device, vocab_size)
    teacher = None
    if config.teacher_model:
        teacher = load_teacher(config.teacher_model, device, torch.bfloat16 if use_bf16 else torch.float32)
        check_embedding_rows(teacher, vocab_size, "the teacher")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    metrics = evaluate_examples(
        model,
        examples,
        teacher=teacher,
        device=device,
        batch_size=config.batch_size,
        chunk_size=config.chunk_size,
        vocab_size=vocab_size,
        exact_match_max=config.action_exact_match_max,
        use_bf16=use_bf16,
        pad_id=pad_id,
    )
    report = {
        "student_model": config.student_model,
        "teacher_model": config.teacher_model,
        "split": config.split,
        "skipped": data.skipped,
        "metrics": metrics,
    }
    run = RunDir(Path(out_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    run.eval_report.write_text(json.dumps(report, indent=2))
    return report
