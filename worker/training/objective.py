"""The objective of one optimizer step, micro-batch by micro-batch (DESIGN §5 "Losses").

    L = α·L_reason + β·L_action + γ·L_curriculum, or with learnable weighting
    L = exp(-s_r)·L_reason + s_r + exp(-s_a)·L_action + s_a + γ·L_curriculum

Means run over the supervised tokens of the whole accumulation window (all micro-batches of all ranks):
each micro-batch adds its loss SUM divided by the window's token count (`StepContext.n_reason` /
`n_action`), so the accumulated gradient is that of the window mean however the window is split.

`StudentObjective` holds the student and the span weights in one module so DDP synchronises both;
its forward returns the loss parts of one micro-batch (`LossParts`), kept apart because PCGrad needs the
reason and action gradients separately (`PCGradBuffers`). `StepSums` adds up what a step logs.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Literal, NamedTuple

import torch

from worker.training.distributed import all_sum
from worker.training.losses import SpanWeighting, compute_span_losses, curriculum_term, pcgrad


@dataclass(frozen=True)
class StepContext:
    """What every micro-batch of one optimizer step shares, besides its batch and complexities."""

    teacher: torch.nn.Module | None
    mode: Literal["span", "flat"]
    temperature: float
    chunk_size: int
    vocab_size: int
    n_reason: int  # supervised reason tokens of the whole window (all ranks)
    n_action: int  # supervised action tokens of the whole window (all ranks)
    micro_batches: int  # micro-batches in the window, all ranks together
    window_examples: int  # examples in the window, all ranks together
    gamma: float
    progress: float  # step / total_steps, for the curriculum term


class LossParts(NamedTuple):
    """One micro-batch's share of the step objective (a NamedTuple: DDP walks its outputs as a tuple)."""

    reason: torch.Tensor  # weighted reason loss, without the weighting's regulariser
    action: torch.Tensor  # weighted action loss, without the weighting's regulariser
    regulariser: torch.Tensor  # the learnable weighting's s_k terms, 1/M of them (zero when fixed)
    curriculum: torch.Tensor  # L_curriculum's share, before γ
    reason_sum: torch.Tensor  # summed reason-token loss, detached (logging)
    action_sum: torch.Tensor  # summed action-token loss, detached (logging)

    def total(self, gamma: float) -> torch.Tensor:
        return self.reason + self.action + self.regulariser + gamma * self.curriculum


class StudentObjective(torch.nn.Module):
    """Student + span weights in one module so DDP synchronises both; forward returns the loss parts."""

    def __init__(self, student: torch.nn.Module, weighting: SpanWeighting) -> None:
        super().__init__()
        self.student = student
        self.weighting = weighting

    def forward(  # type: ignore[override]
        self, batch: dict[str, torch.Tensor], complexity: torch.Tensor, ctx: StepContext
    ) -> LossParts:
        sums = compute_span_losses(
            self.student,
            batch,
            teacher=ctx.teacher,
            mode=ctx.mode,
            temperature=ctx.temperature,
            chunk_size=ctx.chunk_size,
            vocab_size=ctx.vocab_size,
        )
        # This micro-batch's share of the window means; a kind absent from the whole window is None (no
        # loss, no regulariser, no gradient to its log-variance).
        l_reason = sums.reason_sum / ctx.n_reason if ctx.n_reason else None
        l_action = sums.action_sum / ctx.n_action if ctx.n_action else None
        zero = sums.reason_sum.new_zeros(())
        # The weighting is linear in the losses plus a regulariser in s_k; the loss parts are split per kind
        # (PCGrad needs them apart) and the regulariser is counted 1/M per micro-batch, once per window.
        part_reason = self.weighting(l_reason, None, reg_scale=0.0)
        part_action = self.weighting(None, l_action, reg_scale=0.0)
        part_reg = self.weighting(
            None if l_reason is None else zero,
            None if l_action is None else zero,
            reg_scale=1.0 / ctx.micro_batches,
        )
        if ctx.gamma > 0:
            per_example = sums.example_sums / sums.example_counts.clamp(min=1).to(sums.example_sums.dtype)
            share = len(complexity) / ctx.window_examples
            part_curr = curriculum_term(per_example, complexity, ctx.progress) * share
        else:
            part_curr = zero
        return LossParts(
            part_reason, part_action, part_reg, part_curr, sums.reason_sum.detach(), sums.action_sum.detach()
        )


@dataclass
class StepSums:
    """What one step logs, summed over its micro-batches (then over ranks by `all_sum`)."""

    reason: float = 0.0  # summed reason-token loss (divide by the window's reason tokens for the mean)
    action: float = 0.0  # summed action-token loss
    curriculum: float = 0.0  # L_curriculum (before γ)
    regulariser: float = 0.0  # the learnable weighting's s_k terms
    objective: float = 0.0  # the step objective L

    def add(self, parts: LossParts, objective: torch.Tensor) -> None:
        self.reason += parts.reason_sum.item()
        self.action += parts.action_sum.item()
        self.curriculum += parts.curriculum.item()
        self.regulariser += parts.regulariser.item()
        self.objective += objective.item()

    def all_sum(self) -> StepSums:
        """The sums over every rank (one collective); this rank's own sums when there is one process."""
        return StepSums(*all_sum(torch.tensor(astuple(self), dtype=torch.float64)).tolist())


class PCGradBuffers:
    """The window's reason and action gradients of the student, kept apart until PCGrad projects them.

    Each micro-batch adds its reason and action gradients here; the span weights and the curriculum
    term take ordinary gradients (.grad). After the window, `apply` sums everything over ranks (PCGrad
    must project the GLOBAL gradients, so DDP's own reduction is not used), projects reason vs action,
    and adds the result to .grad.
    """

    def __init__(self, model_params: list[torch.nn.Parameter], span_params: list[torch.nn.Parameter]) -> None:
        self.model_params = model_params
        self.span_params = span_params
        self.reason: list[torch.Tensor | None] = [None] * len(model_params)
        self.action: list[torch.Tensor | None] = [None] * len(model_params)

    def backward(self, parts: LossParts, gamma: float) -> None:
        for part, acc in ((parts.reason, self.reason), (parts.action, self.action)):
            if not part.requires_grad:
                continue
            grads = torch.autograd.grad(part, self.model_params, retain_graph=True, allow_unused=True)
            for i, g in enumerate(grads):
                if g is not None:
                    prev = acc[i]
                    acc[i] = g if prev is None else prev + g
        weighted = parts.reason + parts.action + parts.regulariser
        curriculum = gamma * parts.curriculum
        if self.span_params and weighted.requires_grad:
            torch.autograd.backward(weighted, inputs=self.span_params, retain_graph=curriculum.requires_grad)
        if curriculum.requires_grad:
            torch.autograd.backward(curriculum, inputs=self.model_params)

    def apply(self, world: int) -> None:
        if world > 1:
            for grads in (self.reason, self.action):
                for i, p in enumerate(self.model_params):
                    g = grads[i]
                    grads[i] = all_sum(g if g is not None else torch.zeros_like(p))
            for p in [*self.model_params, *self.span_params]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                all_sum(p.grad)
        combined = pcgrad(self.reason, self.action)
        for p, g in zip(self.model_params, combined, strict=True):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
