"""The span-level distillation recipe: one readable loop from dataset records to a trained student.

    setup     load tokenizer (+ teacher tokenizer check), render records, load student (+ LoRA) and teacher,
              build SpanWeighting, AdamW (decay / no-decay / span-weight groups), warmup + cosine schedule,
              curriculum sampler; resume from the newest complete checkpoint in out_dir if there is one
    evaluate  the eval split before training (kept in eval_before.json so a resumed run reuses it)
    train     per step: draw the global batch, count its reason/action tokens, run the micro-batches of this
              rank, each adding sum/window_count to the loss (so the gradient is that of the window mean),
              optional PCGrad, clip, step; log metrics; checkpoint every N steps; stop cooperatively
    finish    final checkpoint, save_pretrained into out_dir/final, evaluate after, eval_report.json, plot

Under torchrun (`worker.training.train`) the student and the span weights are wrapped together in DDP; each
rank scales its share of the global-mean loss by world_size to undo DDP's gradient averaging. Rank 0 alone
writes checkpoints, metrics and reports. Objective (DESIGN §5): L = α·L_reason + β·L_action + γ·L_curriculum,
with learnable weighting exp(-s_r)·L_reason + s_r + exp(-s_a)·L_action + s_a + γ·L_curriculum.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from contract.job_config import DistillConfig
from worker.training import checkpoint as ckpt
from worker.training.curriculum import CurriculumSampler
from worker.training.data import (
    chunks,
    num_training_steps,
    prepare_examples,
    rank_slice,
    window_counts,
)
from worker.training.evaluate import evaluate_examples, make_report
from worker.training.losses import SpanWeighting, compute_span_losses, curriculum_term, pcgrad
from worker.training.models import check_embedding_rows, load_student, load_teacher, load_tokenizers, resolve_device
from worker.training.render import collate

# Config fields that must match for a checkpoint to be resumed (the rest, e.g. max_steps, may change).
_RESUME_KEYS = ("student_model", "teacher_model", "loss", "curriculum")
_RESUME_TRAINING_KEYS = ("micro_batch_size", "grad_accum_steps", "max_seq_len", "seed", "lora")


@dataclass
class TrainResult:
    status: Literal["completed", "stopped"]
    steps: int
    total_steps: int
    final_metrics: dict[str, Any]
    skipped: dict[str, int]
    out_dir: Path
    final_dir: Path | None = None
    checkpoint_dir: Path | None = None
    metrics_path: Path | None = None
    eval_report: dict[str, Any] | None = None
    eval_report_path: Path | None = None
    plot_path: Path | None = None
    resumed_from_step: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class _StudentObjective(torch.nn.Module):
    """Student + span weights in one module so DDP synchronises both; forward returns the loss parts."""

    def __init__(self, student: torch.nn.Module, weighting: SpanWeighting) -> None:
        super().__init__()
        self.student = student
        self.weighting = weighting

    def forward(  # type: ignore[override]
        self, batch: dict[str, torch.Tensor], complexity: torch.Tensor, ctx: dict[str, Any]
    ) -> tuple[torch.Tensor, ...]:
        sums = compute_span_losses(
            self.student,
            batch,
            teacher=ctx["teacher"],
            mode=ctx["mode"],
            temperature=ctx["temperature"],
            chunk_size=ctx["chunk_size"],
            vocab_size=ctx["vocab_size"],
        )
        # This micro-batch's share of the window means; a kind absent from the whole window is None (no
        # loss, no regulariser, no gradient to its log-variance).
        l_reason = sums.reason_sum / ctx["n_reason"] if ctx["n_reason"] else None
        l_action = sums.action_sum / ctx["n_action"] if ctx["n_action"] else None
        zero = sums.reason_sum.new_zeros(())
        # The weighting is linear in the losses plus a regulariser in s_k; the loss parts are split per kind
        # (PCGrad needs them apart) and the regulariser is counted 1/M per micro-batch, once per window.
        part_reason = self.weighting(l_reason, None, reg_scale=0.0)
        part_action = self.weighting(None, l_action, reg_scale=0.0)
        part_reg = self.weighting(
            None if l_reason is None else zero,
            None if l_action is None else zero,
            reg_scale=1.0 / ctx["micro_batches"],
        )
        if ctx["gamma"] > 0:
            per_example = sums.example_sums / sums.example_counts.clamp(min=1).to(sums.example_sums.dtype)
            share = len(complexity) / ctx["window_examples"]
            part_curr = curriculum_term(per_example, complexity, ctx["progress"]) * share
        else:
            part_curr = zero
        return (
            part_reason,
            part_action,
            part_reg,
            part_curr,
            sums.reason_sum.detach(),
            sums.action_sum.detach(),
        )


# -- distributed ----------------------------------------------------------------------------------------


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _dist()[1] > 1:
        dist.barrier()


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place SUM over ranks (NCCL only reduces CUDA tensors: CPU bookkeeping tensors take a round trip)."""
    if _dist()[1] > 1:
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            on_gpu = t.to("cuda")
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            t.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to `min_ratio` at `total`."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def build_optimizer(model: torch.nn.Module, weighting: torch.nn.Module, config: DistillConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; span weights in their own no-decay group and lr."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.training.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    span_params = [p for p in weighting.parameters() if p.requires_grad]
    if span_params:
        groups.append({"params": span_params, "weight_decay": 0.0, "lr": config.loss.weighting_lr})
    return torch.optim.AdamW(groups, lr=config.training.lr, betas=(0.9, 0.95), eps=1e-8)


def _check_resumable(meta: dict[str, Any], config: DistillConfig, data_hash: str, world: int) -> None:
    if meta.get("dataset_hash") != data_hash:
        raise ValueError("the checkpoint in out_dir was trained on different records (dataset hash differs)")
    old, new = meta.get("config", {}), config.model_dump(mode="json")
    changed = [k for k in _RESUME_KEYS if old.get(k) != new[k]]
    changed += [f"training.{k}" for k in _RESUME_TRAINING_KEYS if old.get("training", {}).get(k) != new["training"][k]]
    if meta.get("world_size", 1) != world:
        changed.append("world_size")
    if changed:
        raise ValueError(f"cannot resume the checkpoint in out_dir: config changed in {', '.join(changed)}")


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be recomputed)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= last_step]
    path.write_text("".join(ln + "\n" for ln in kept))


def run_training(
    config: DistillConfig,
    records: list[dict[str, Any]],
    out_dir: Path,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    job_id: str | None = None,
) -> TrainResult:
    """Train the student on the records' train split; evaluate on the eval split before and after."""
    out_dir = Path(out_dir)
    rank, world = _dist()
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    tc, lc = config.training, config.loss
    device = resolve_device(config.resources.device)
    use_bf16 = device.type == "cuda" and (tc.bf16 is True or (tc.bf16 == "auto" and torch.cuda.is_bf16_supported()))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else nullcontext
    seed_everything(tc.seed)

    # -- setup: tokenizers, examples, models ---------------------------------------------------------------
    use_teacher = lc.teacher_signal == "online"
    tokenizer, vocab_size = load_tokenizers(config.student_model, config.teacher_model if use_teacher else None)
    data = prepare_examples(records, tokenizer, max_seq_len=tc.max_seq_len)
    train = data.train
    if len(train) == 0:
        raise ValueError(f"no trainable example in the train split (skipped: {data.skipped})")
    student = load_student(config, device, vocab_size)
    teacher = None
    if use_teacher and config.teacher_model:
        teacher = load_teacher(config.teacher_model, device, torch.bfloat16 if use_bf16 else torch.float32)
        check_embedding_rows(teacher, vocab_size, "the teacher")
    weighting = SpanWeighting(lc.weighting, alpha=lc.alpha, beta=lc.beta).to(device)
    objective = _StudentObjective(student, weighting)
    optimizer = build_optimizer(student, weighting, config)
    global_batch = tc.micro_batch_size * tc.grad_accum_steps * world
    total_steps = num_training_steps(len(train), global_batch, max_steps=tc.max_steps, epochs=tc.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.warmup_steps, total_steps, tc.min_lr_ratio))
    cc = config.curriculum
    sampler = CurriculumSampler(
        train.complexities,
        cc.schedule,
        seed=cc.seed,
        batch_size=global_batch,
        ids=train.ids,
        initial_competence=cc.initial_competence,
        competence_steps=cc.competence_steps or max(1, total_steps // 2),
    )
    data_hash = ckpt.dataset_hash(records)
    meta = {
        "job_id": job_id,
        "config": config.model_dump(mode="json"),
        "dataset_hash": data_hash,
        "code_version": ckpt.code_version(),
        "world_size": world,
        "total_steps": total_steps,
    }
    metrics_path = out_dir / "metrics.jsonl"
    start_step, resumed_from = 0, None
    latest = ckpt.find_latest_checkpoint(out_dir)
    if latest is not None:
        _check_resumable(ckpt.read_meta(latest), config, data_hash, world)
        loaded_meta, sampler_state = ckpt.load_checkpoint(
            latest, model=student, optimizer=optimizer, scheduler=scheduler, weighting=weighting
        )
        sampler.load_state_dict(sampler_state)
        start_step = resumed_from = int(loaded_meta["step"])
        if is_main:
            _trim_metrics(metrics_path, start_step)
    _barrier()
    train_module: torch.nn.Module = objective
    if world > 1:
        train_module = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        )
    model_params = [p for p in student.parameters() if p.requires_grad]
    span_params = [p for p in weighting.parameters() if p.requires_grad]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def evaluate() -> dict[str, Any]:
        return evaluate_examples(
            student,
            data.eval.examples[: tc.eval_max_examples],
            teacher=teacher,
            device=device,
            batch_size=tc.micro_batch_size,
            chunk_size=lc.chunk_size,
            vocab_size=vocab_size,
            exact_match_max=tc.action_exact_match_max,
            use_bf16=use_bf16,
            pad_id=pad_id,
        )

    do_eval = is_main and len(data.eval) > 0 and tc.eval_max_examples > 0
    before_path = out_dir / "eval_before.json"
    before: dict[str, Any] | None = None
    if do_eval:
        if start_step == 0:
            before = evaluate()
            before_path.write_text(json.dumps(before, indent=2))
        elif before_path.exists():
            before = json.loads(before_path.read_text())

    def save(step: int) -> Path | None:
        path = None
        if is_main:
            path = ckpt.save_checkpoint(
                out_dir,
                step,
                model=student,
                optimizer=optimizer,
                scheduler=scheduler,
                weighting=weighting,
                sampler_state=sampler.state_dict(),
                meta=meta,
                keep=tc.keep_checkpoints,
            )
        _barrier()
        return path

    # -- train -----------------------------------------------------------------------------------------------
    history: list[dict[str, Any]] = []
    last_saved = start_step if resumed_from is not None else -1
    last_path: Path | None = latest
    step_times: list[float] = []
    status: Literal["completed", "stopped"] = "completed"
    step = start_step
    student.train()
    while step < total_steps:
        stop = torch.tensor([1.0 if (should_stop is not None and should_stop()) else 0.0])
        if _all_sum(stop).item() > 0:  # any rank asked (SIGTERM, cancel): everyone stops at this step
            status = "stopped"
            break
        t0 = time.perf_counter()
        batch_ids = sampler.next_batch()
        window = [train.examples[i] for i in batch_ids]
        n_reason, n_action = window_counts(window, mode=lc.mode, has_teacher=teacher is not None)
        micro = chunks(rank_slice(batch_ids, rank, world), tc.micro_batch_size)
        ctx = {
            "teacher": teacher,
            "mode": lc.mode,
            "temperature": lc.temperature,
            "chunk_size": lc.chunk_size,
            "vocab_size": vocab_size,
            "n_reason": n_reason,
            "n_action": n_action,
            "micro_batches": len(micro) * world,
            "window_examples": len(batch_ids),
            "gamma": lc.gamma,
            "progress": step / total_steps,
        }
        # DDP averages gradients over ranks; each rank holds its share of a global SUM, so scale back up.
        scale = float(world) if not lc.pcgrad else 1.0
        logged = torch.zeros(5, dtype=torch.float64)  # reason_sum, action_sum, curriculum, reg, objective
        g_reason: list[torch.Tensor | None] = [None] * len(model_params)
        g_action: list[torch.Tensor | None] = [None] * len(model_params)
        optimizer.zero_grad(set_to_none=True)
        for j, idx in enumerate(micro):
            batch = {k: v.to(device) for k, v in collate([train.examples[i] for i in idx], pad_id).items()}
            complexity = torch.tensor([train.complexities[i] for i in idx], device=device)
            last = j == len(micro) - 1
            # PCGrad reduces gradients itself (it must project the GLOBAL reason/action gradients).
            sync = nullcontext() if (world == 1 or (last and not lc.pcgrad)) else train_module.no_sync()  # type: ignore[operator]
            with sync:
                with autocast():
                    p_r, p_a, p_reg, p_curr, r_sum, a_sum = train_module(batch, complexity, ctx)
                total = p_r + p_a + p_reg + lc.gamma * p_curr
                if lc.pcgrad:
                    _pcgrad_backward(
                        p_r,
                        p_a,
                        total,
                        p_r + p_a + p_reg,
                        lc.gamma * p_curr,
                        model_params,
                        span_params,
                        g_reason,
                        g_action,
                    )
                else:
                    (total * scale).backward()
            logged += torch.tensor(
                [r_sum.item(), a_sum.item(), p_curr.item(), p_reg.item(), total.item()], dtype=torch.float64
            )
        if lc.pcgrad:
            _finish_pcgrad(model_params, span_params, g_reason, g_action, world)
        clip = tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model_params, clip))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        _all_sum(logged)
        step += 1
        dt = time.perf_counter() - t0
        step_times.append(dt)
        weights = weighting.effective_weights()
        supervised = n_reason + n_action
        recent = step_times[-20:]
        row = {
            "step": step,
            "total_steps": total_steps,
            "loss": float(logged[4]),
            "loss_reason": float(logged[0]) / max(n_reason, 1),
            "loss_action": float(logged[1]) / max(n_action, 1),
            "loss_curriculum": float(logged[2]),
            "weight_reason": float(weights.get("reason", lc.alpha)),
            "weight_action": float(weights.get("action", lc.beta)),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": supervised / dt if dt > 0 else 0.0,
            "supervised_tokens": supervised,
            "reason_tokens": n_reason,
            "action_tokens": n_action,
            "eta_s": (total_steps - step) * sum(recent) / len(recent),
        }
        history.append(row)
        if is_main:
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            if progress is not None:
                progress(row)
        if tc.checkpoint_every and step % tc.checkpoint_every == 0:
            last_path, last_saved = save(step), step
        if tc.eval_every and do_eval and step % tc.eval_every == 0 and step < total_steps:
            report = evaluate()
            student.train()
            with open(metrics_path, "a") as fh:
                fh.write(json.dumps({"step": step, "eval": report}) + "\n")
    if last_saved != step:
        last_path = save(step)
    result = TrainResult(
        status=status,
        steps=step,
        total_steps=total_steps,
        final_metrics=history[-1] if history else {},
        skipped=data.skipped,
        out_dir=out_dir,
        checkpoint_dir=last_path,
        metrics_path=metrics_path,
        resumed_from_step=resumed_from,
        history=history,
    )
    if status == "stopped":
        return result

    # -- finish: final model, evaluation, plot -------------------------------------------------------------
    if is_main:
        if do_eval:
            after = evaluate()
            report = make_report(before, after)
            result.eval_report = report
            result.eval_report_path = out_dir / "eval_report.json"
            result.eval_report_path.write_text(json.dumps(report, indent=2))
        result.final_dir = _save_final(student, tokenizer, out_dir / "final")
        from worker.training.plots import plot_metrics

        if metrics_path.exists():
            result.plot_path = plot_metrics(metrics_path, out_dir / "loss_curves.png")
    _barrier()
    return result


def _pcgrad_backward(
    p_reason: torch.Tensor,
    p_action: torch.Tensor,
    total: torch.Tensor,
    weighted: torch.Tensor,
    curriculum: torch.Tensor,
    model_params: list[torch.nn.Parameter],
    span_params: list[torch.nn.Parameter],
    g_reason: list[torch.Tensor | None],
    g_action: list[torch.Tensor | None],
) -> None:
    """Accumulate the reason and action gradients separately (projected after the window); the span
    weights and the curriculum term take ordinary gradients."""
    for part, acc in ((p_reason, g_reason), (p_action, g_action)):
        if not part.requires_grad:
            continue
        grads = torch.autograd.grad(part, model_params, retain_graph=True, allow_unused=True)
        for i, g in enumerate(grads):
            if g is not None:
                acc[i] = g if acc[i] is None else acc[i] + g  # type: ignore[operator]
    if span_params and weighted.requires_grad:
        torch.autograd.backward(weighted, inputs=span_params, retain_graph=curriculum.requires_grad)
    if curriculum.requires_grad:
        torch.autograd.backward(curriculum, inputs=model_params)
    del total


def _finish_pcgrad(
    model_params: list[torch.nn.Parameter],
    span_params: list[torch.nn.Parameter],
    g_reason: list[torch.Tensor | None],
    g_action: list[torch.Tensor | None],
    world: int,
) -> None:
    """Sum the window's gradients over ranks, project reason vs action, and add the result to .grad."""
    if world > 1:
        for grads in (g_reason, g_action):
            for i, p in enumerate(model_params):
                g = grads[i]
                grads[i] = _all_sum(g if g is not None else torch.zeros_like(p))
        for p in [*model_params, *span_params]:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            _all_sum(p.grad)
    combined = pcgrad(g_reason, g_action)
    for p, g in zip(model_params, combined, strict=True):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def _save_final(student: torch.nn.Module, tokenizer: Any, path: Path) -> Path:
    model: Any = student
    if hasattr(model, "merge_and_unload"):  # LoRA: ship a plain model with the adapters merged in
        model = model.merge_and_unload()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
