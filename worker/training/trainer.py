"""The span-level distillation trainer: dataset records in, a trained student and its reports out.

`run_training` reads as the run goes; each phase is one short method of `Trainer`:

    setup       tokenizer (+ the teacher's, checked first), rendered examples, student (+ LoRA) and teacher,
                span weights, AdamW + warmup/cosine, curriculum sampler; resume from the newest complete
                checkpoint in the run directory when there is one
    evaluate    the eval split; before training it is kept in eval_before.json so a resumed run reuses it
    step        one optimizer step: draw the global batch, count its reason/action tokens, run this rank's
                micro-batches (each adds sum/window_count to the loss, so the gradient is that of the window
                mean), optional PCGrad, clip, step; returns the step's metrics row
    checkpoint  rank 0 writes checkpoints/step-N every `checkpoint_every` steps and when the run ends or stops
    finish      evaluate after, the eval report, save_pretrained into final/, the loss-curve plot

Under torchrun (`worker.training.train`) the student and the span weights are wrapped together in DDP, or with
`resources.parallelism: "fsdp"` the student is sharded with FSDP2 (`sharding.py`: gathered checkpoints, every
rank evaluates in lockstep); each rank scales its share of the global-mean loss by world_size to undo the
gradient averaging. Rank 0 alone
writes checkpoints, metrics and reports, each through the job attempt's fence (`checkpoint.py`, `worker.fence`).
File names come from `contract.rundir`; the objective is in `objective.py`, checkpoints and resume in `checkpoint.py`.
With ``teacher_signal: "offline"`` no teacher is loaded: each micro-batch carries a capture's top-k rows (`topk.py`).

Why this file is long: one class holds the run's phases in reading order; splitting it would scatter that order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch.nn.parallel import DistributedDataParallel

from contract.job_config import DistillConfig
from contract.rundir import RunDir, TrainResult
from contract.spans import DatasetRecord
from worker.context import BadJobInput
from worker.training import checkpoint as ckpt
from worker.training.curriculum import CurriculumSampler
from worker.training.data import PreparedData, chunks, num_training_steps, prepare_examples, rank_slice, window_counts
from worker.training.distributed import all_sum, barrier, rank_and_world
from worker.training.evaluate import evaluate_examples, make_report
from worker.training.losses import SpanWeighting
from worker.training.models import check_embedding_rows, load_student, load_teacher, load_tokenizers, resolve_device
from worker.training.objective import PCGradBuffers, StepContext, StepSums, StudentObjective
from worker.training.optim import build_optimizer, build_scheduler, seed_everything
from worker.training.plots import plot_run
from worker.training.render import collate
from worker.training.sharding import (
    gather_model_state,
    gather_optimizer_state,
    grad_norm_value,
    reduce_replicated_grads,
    set_gradient_sync,
    shard_student,
    trainable_subset,
    unsharded_copy,
)


def run_training(
    config: DistillConfig,
    records: Sequence[DatasetRecord],
    out_dir: Path,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    job_id: str | None = None,
) -> TrainResult:
    """Train the student on the records' train split; evaluate on the eval split before and after.

    Writes into ``out_dir`` (see ``contract.rundir``) and resumes from a checkpoint found there. Returns a
    "stopped" result, after a checkpoint, once ``should_stop`` turns True on any rank.
    """
    tc = config.training
    trainer = Trainer.setup(config, records, Path(out_dir), job_id=job_id)
    before = trainer.evaluate_before()
    trainer.student.train()  # from_pretrained hands the model over in eval mode
    while trainer.state.step < trainer.total_steps:
        if trainer.stop_requested(should_stop):
            trainer.checkpoint()
            return trainer.result("stopped")
        row = trainer.step()
        trainer.log(row, progress)
        step = trainer.state.step
        if tc.checkpoint_every and step % tc.checkpoint_every == 0:
            trainer.checkpoint()
        if tc.eval_every and step % tc.eval_every == 0 and step < trainer.total_steps and trainer.evaluates:
            report = trainer.evaluate()
            if trainer.is_main:
                ckpt.append_row(trainer.run.metrics, {"step": step, "eval": report})
    trainer.checkpoint()
    return trainer.finish(before)


@dataclass
class TrainState:
    """What changes as the run goes; everything else is fixed at setup."""

    step: int = 0
    resumed_from: int | None = None
    last_saved: int = -1  # the step of the newest checkpoint this run wrote or resumed from
    checkpoint_dir: Path | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)


@dataclass
class Trainer:
    config: DistillConfig
    run: RunDir
    rank: int
    world: int
    sharded: bool  # FSDP2 (resources.parallelism="fsdp" over several ranks), see sharding.py
    device: torch.device
    use_bf16: bool
    tokenizer: Any
    vocab_size: int  # the tokenizer's real vocabulary (padded embedding rows excluded)
    pad_id: int
    data: PreparedData
    student: torch.nn.Module
    teacher: torch.nn.Module | None
    weighting: SpanWeighting
    module: torch.nn.Module  # StudentObjective, wrapped in DDP when world > 1
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: CurriculumSampler
    total_steps: int
    meta: dict[str, Any]  # what every checkpoint's meta.json records besides its step
    state: TrainState = field(default_factory=TrainState)
    offline: Any = None  # topk.OfflineSignal: the captured teacher rows of teacher_signal='offline'

    # -- setup -------------------------------------------------------------------------------------------

    @classmethod
    def setup(cls, config: DistillConfig, records: Sequence[DatasetRecord], out_dir: Path, *,
              job_id: str | None = None) -> Trainer:
        run = RunDir(out_dir)
        rank, world = rank_and_world()
        if rank == 0:
            run.root.mkdir(parents=True, exist_ok=True)
        tc, lc, cc = config.training, config.loss, config.curriculum
        device = resolve_device(config.resources.device)
        use_bf16 = device.type == "cuda" and (tc.bf16 is True or (tc.bf16 == "auto" and torch.cuda.is_bf16_supported()))
        seed_everything(tc.seed)

        use_teacher = lc.teacher_signal == "online"
        tokenizer, vocab_size = load_tokenizers(config.student_model, config.teacher_model if use_teacher else None)
        data = prepare_examples(records, tokenizer, max_seq_len=tc.max_seq_len, mode=lc.mode,
                                syntax=tc.tool_call_syntax)
        if len(data.train) == 0:
            raise BadJobInput(f"no trainable example in the train split (skipped: {data.skipped})")
        from worker.training.topk import offline_signal

        offline = offline_signal(config, data.train.examples, vocab_size)
        student = load_student(config, device, vocab_size)
        teacher = None
        if use_teacher and config.teacher_model:
            teacher = load_teacher(config.teacher_model, device, torch.bfloat16 if use_bf16 else torch.float32)
            check_embedding_rows(teacher, vocab_size, "the teacher")
        weighting = SpanWeighting(lc.weighting, alpha=lc.alpha, beta=lc.beta).to(device)
        sharded = world > 1 and config.resources.parallelism == "fsdp"
        if sharded:  # before the optimizer: it must hold the sharded parameters
            shard_student(student, device, world)

        optimizer = build_optimizer(student, weighting, config)
        global_batch = tc.micro_batch_size * tc.grad_accum_steps * world
        total_steps = num_training_steps(len(data.train), global_batch, max_steps=tc.max_steps, epochs=tc.epochs)
        scheduler = build_scheduler(optimizer, config, total_steps)
        sampler = CurriculumSampler(
            data.train.complexities,
            cc.schedule,
            seed=cc.seed,
            batch_size=global_batch,
            ids=data.train.ids,
            initial_competence=cc.initial_competence,
            competence_steps=cc.competence_steps or max(1, total_steps // 2),
        )
        data_hash = ckpt.dataset_hash(records)
        meta = {"job_id": job_id, "config": config.model_dump(mode="json"), "dataset_hash": data_hash,
                "code_version": ckpt.code_version(), "world_size": world, "total_steps": total_steps}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        trainer = cls(config=config, run=run, rank=rank, world=world, sharded=sharded, device=device, use_bf16=use_bf16,
                      tokenizer=tokenizer, vocab_size=vocab_size, pad_id=pad_id, data=data, student=student,
                      teacher=teacher, weighting=weighting, module=StudentObjective(student, weighting),
                      optimizer=optimizer, scheduler=scheduler, sampler=sampler, total_steps=total_steps, meta=meta,
                      offline=offline)
        trainer.resume(data_hash)
        barrier()
        if world > 1 and not sharded:
            trainer.module = DistributedDataParallel(
                trainer.module, device_ids=[device.index] if device.type == "cuda" else None
            )
        return trainer

    def resume(self, data_hash: str) -> None:
        """Restore the newest complete checkpoint of the run directory, if any (``BadJobInput`` when it
        belongs to other records or a changed config); later metric lines are dropped, to be recomputed."""
        latest = ckpt.find_latest_checkpoint(self.run.root)
        if latest is None:  # an attempt that died before its first checkpoint: its metric lines are redone
            if self.is_main:
                ckpt.trim_rows(self.run.metrics, 0)
            return
        ckpt.check_resumable(ckpt.read_meta(latest), self.config, data_hash, self.world)
        meta, sampler_state = ckpt.load_checkpoint(
            latest, model=self.student, optimizer=self.optimizer, scheduler=self.scheduler, weighting=self.weighting,
            sharded_owner=self.module if self.sharded else None,
        )
        self.sampler.load_state_dict(sampler_state)
        step = int(meta["step"])
        self.state = TrainState(step=step, resumed_from=step, last_saved=step, checkpoint_dir=latest)
        if self.is_main:
            ckpt.trim_rows(self.run.metrics, step)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def evaluates(self) -> bool:
        """Whether this rank evaluates: rank 0 (every rank in lockstep when sharded), when there is an eval split
        and examples to score. Only rank 0 writes what it finds."""
        return (self.is_main or self.sharded) and len(self.data.eval) > 0 and self.config.training.eval_max_examples > 0

    # -- evaluate ----------------------------------------------------------------------------------------

    def evaluate(self) -> dict[str, Any]:
        tc = self.config.training
        return evaluate_examples(
            self.student,
            self.data.eval.examples[: tc.eval_max_examples],
            teacher=self.teacher,
            device=self.device,
            batch_size=tc.micro_batch_size,
            chunk_size=self.config.loss.chunk_size,
            vocab_size=self.vocab_size,
            exact_match_max=tc.action_exact_match_max,
            use_bf16=self.use_bf16,
            pad_id=self.pad_id,
        )

    def evaluate_before(self) -> dict[str, Any] | None:
        """The evaluation before training: computed at step 0, read back by a resumed run."""
        if not self.evaluates:
            return None
        if self.state.step == 0:
            before = self.evaluate()
            if self.is_main:
                ckpt.write_json(self.run.eval_before, before)
            return before
        if self.run.eval_before.exists():
            return cast(dict[str, Any], json.loads(self.run.eval_before.read_text()))
        return None

    # -- step --------------------------------------------------------------------------------------------

    def stop_requested(self, should_stop: Callable[[], bool] | None) -> bool:
        """True when any rank was asked to stop (SIGTERM, cancel): every rank stops at the same step."""
        stop = torch.tensor([1.0 if (should_stop is not None and should_stop()) else 0.0])
        return all_sum(stop).item() > 0

    def step(self) -> dict[str, Any]:
        """One optimizer step over the next global batch; returns its metrics row."""
        lc, tc = self.config.loss, self.config.training
        t0 = time.perf_counter()
        batch_ids = self.sampler.next_batch()
        window = [self.data.train.examples[i] for i in batch_ids]
        n_reason, n_action = window_counts(window, mode=lc.mode, has_teacher=self.teacher is not None)
        micro = chunks(rank_slice(batch_ids, self.rank, self.world), tc.micro_batch_size)
        ctx = StepContext(
            teacher=self.teacher,
            mode=lc.mode,
            temperature=lc.temperature,
            chunk_size=lc.chunk_size,
            vocab_size=self.vocab_size,
            n_reason=n_reason,
            n_action=n_action,
            micro_batches=len(micro) * self.world,
            window_examples=len(batch_ids),
            gamma=lc.gamma,
            progress=self.state.step / self.total_steps,
        )
        self.optimizer.zero_grad(set_to_none=True)
        sums = self._backward(micro, ctx)
        model_params = [p for p in self.student.parameters() if p.requires_grad]
        clip = tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf")
        grad_norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(model_params, clip))
        lr = float(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        sums = sums.all_sum()
        self.state.step += 1
        dt = time.perf_counter() - t0
        self.state.step_times.append(dt)
        return self._metrics_row(sums, n_reason, n_action, lr=lr, grad_norm=grad_norm, dt=dt)

    def _backward(self, micro: list[list[int]], ctx: StepContext) -> StepSums:
        """Forward + backward of this rank's micro-batches; gradients land in .grad, reduced over ranks."""
        lc, train = self.config.loss, self.data.train
        # DDP averages gradients over ranks; each rank holds its share of a global SUM, so scale back up.
        scale = float(self.world) if not lc.pcgrad else 1.0
        buffers = None
        if lc.pcgrad:
            buffers = PCGradBuffers([p for p in self.student.parameters() if p.requires_grad],
                                    [p for p in self.weighting.parameters() if p.requires_grad])
        sums = StepSums()
        for j, idx in enumerate(micro):
            batch = {k: v.to(self.device) for k, v in collate([train.examples[i] for i in idx], self.pad_id).items()}
            if self.offline is not None:
                batch.update(self.offline.rows([train.examples[i] for i in idx], self.device))
            complexity = torch.tensor([train.complexities[i] for i in idx], device=self.device)
            # DDP reduces on the window's last backward; PCGrad reduces itself (it projects the GLOBAL gradients).
            reduce_now = self.world == 1 or (j == len(micro) - 1 and buffers is None)
            with self._no_sync(not reduce_now):
                with self._autocast():
                    parts = self.module(batch, complexity, ctx)
                total = parts.total(lc.gamma)
                if buffers is not None:
                    buffers.backward(parts, lc.gamma)
                else:
                    (total * scale).backward()
            sums.add(parts, total)
        if buffers is not None:
            buffers.apply(self.world)
        if self.sharded:  # the span weights are replicated, not sharded: averaged like DDP would
            reduce_replicated_grads(self.weighting, self.world)
        return sums

    def _no_sync(self, skip: bool) -> AbstractContextManager[Any]:
        if self.sharded:
            set_gradient_sync(self.student, not skip)
            return nullcontext()
        return cast(DistributedDataParallel, self.module).no_sync() if skip else nullcontext()

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else nullcontext()

    def _metrics_row(self, sums: StepSums, n_reason: int, n_action: int, *, lr: float, grad_norm: float,
                     dt: float) -> dict[str, Any]:
        """The step's row in metrics.jsonl, the progress report and the result's final_metrics."""
        lc = self.config.loss
        weights = self.weighting.effective_weights()
        supervised = n_reason + n_action
        recent = self.state.step_times[-20:]
        return {
            "step": self.state.step,
            "total_steps": self.total_steps,
            "loss": sums.objective,
            "loss_reason": sums.reason / max(n_reason, 1),
            "loss_action": sums.action / max(n_action, 1),
            "loss_curriculum": sums.curriculum,
            "weight_reason": float(weights.get("reason", lc.alpha)),
            "weight_action": float(weights.get("action", lc.beta)),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": supervised / dt if dt > 0 else 0.0,
            "supervised_tokens": supervised,
            "reason_tokens": n_reason,
            "action_tokens": n_action,
            "eta_s": (self.total_steps - self.state.step) * sum(recent) / len(recent),
            **({"data": self.data.report()} if self.state.step == 1 else {}),
        }

    def log(self, row: dict[str, Any], progress: Callable[[dict[str, Any]], None] | None) -> None:
        self.state.history.append(row)
        if self.is_main:
            ckpt.append_row(self.run.metrics, row)
            if progress is not None:
                progress(row)

    # -- checkpoint --------------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Save the current step (rank 0) unless it is saved already; every rank waits for it."""
        step = self.state.step
        if self.state.last_saved == step:
            return
        path = None
        gathered = None
        if self.sharded:  # every rank gathers; rank 0 writes the same files an unsharded run writes
            state = trainable_subset(self.student, gather_model_state(self.student))
            gathered = (state, gather_optimizer_state(self.module, self.optimizer))
        if self.is_main:
            path = ckpt.save_checkpoint(
                self.run.root,
                step,
                model=self.student,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                weighting=self.weighting,
                sampler_state=self.sampler.state_dict(),
                meta=self.meta,
                keep=self.config.training.keep_checkpoints,
                gathered=gathered,
            )
        barrier()
        self.state.checkpoint_dir, self.state.last_saved = path, step

    # -- finish ------------------------------------------------------------------------------------------

    def result(self, status: Literal["completed", "stopped"]) -> TrainResult:
        s = self.state
        # What rendering split, dropped or truncated travels with the final metrics into the job's result.
        final = {**(s.history[-1] if s.history else {}), "data": self.data.report()}
        return TrainResult(
            status=status,
            steps=s.step,
            total_steps=self.total_steps,
            final_metrics=final,
            skipped=self.data.skipped,
            resumed_from_step=s.resumed_from,
            checkpoint_dir=s.checkpoint_dir,
            history=s.history,
        )

    def finish(self, before: dict[str, Any] | None) -> TrainResult:
        """Evaluate after training, write the eval report, the final model and the plot (rank 0)."""
        result = self.result("completed")
        after = self.evaluate() if self.evaluates else None  # every rank of a sharded run, in lockstep
        student = self.student
        if self.sharded:  # a collective; the gathered state lands on rank 0 only
            state = gather_model_state(self.student)
            student = unsharded_copy(self.student, state) if self.is_main else student
        if self.is_main:
            if after is not None:
                report = make_report(before, after)
                ckpt.write_json(self.run.eval_report, report)
                result.eval_report, result.eval_report_path = report, self.run.eval_report
            result.final_dir = save_final(student, self.tokenizer, self.run.final)
            ckpt.check_lease()
            result.plot_path = plot_run(self.run)
        barrier()
        return result


def save_final(student: torch.nn.Module, tokenizer: Any, path: Path) -> Path:
    """The trained student in save_pretrained form (LoRA adapters merged in), with its tokenizer."""
    model: Any = student
    if hasattr(model, "merge_and_unload"):  # LoRA: ship a plain model with the adapters merged in
        model = model.merge_and_unload()
    with ckpt.promoted(path) as scratch:  # assembled aside, promoted by the attempt's fence
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
    return path
