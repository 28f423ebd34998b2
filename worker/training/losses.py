"""Span-level distillation losses (DESIGN §5 "Losses"), pure functions over a collated batch.

Shapes: B = batch, T = sequence length, H = hidden size, V = vocabulary, N = supervised positions.
Labels are shifted: position t (0..T-2) is supervised when kinds[:, t+1] ∈ {REASON, ACTION} and both
t and t+1 are attended; its target is input_ids[:, t+1]. The student (and teacher, under no_grad)
runs to its final hidden states [B, T, H]; only the N supervised rows are gathered, and the output
embedding plus the architecture's post-head transform (`logits.logits_fn`: Granite's scaling, Gemma's
soft-capping, Cohere's scale — the logits the model's forward produces) is applied to them in chunks of
`chunk_size` rows, each chunk's logits + loss wrapped in
activation checkpointing (all but the last chunk), so neither [B, T, V] nor [N, V] logits ever
exist: peak logit memory is a few [chunk_size, V] fp32 buffers, independent of unsupervised positions.
Logits are upcast to fp32 before softmax. Reason positions get KL(p_teacher ‖ p_student) at
temperature T scaled by T² when a teacher is given, else cross-entropy; action positions always get
cross-entropy. Sums (not means) and counts are returned: the recipe normalises over the whole
accumulation window.

**Offline teacher signal** (`topk_kl_rows`, DESIGN §5): instead of a teacher model, the batch carries the
captured top-k teacher log-probs of every reason position (``topk_ids`` Long[N_kl, k], ``topk_logp``
[N_kl, k + 1], the last column the teacher's leftover mass, see `worker.training.topk`). The estimator is
top-k + one tail bucket: both distributions are coarse-grained onto the k + 1 outcomes {each id in S, "any other
id"}, S the teacher's top-k, and

    KL_k = Σ_{i∈S} p_i (log p_i − log q_i) + p_rest (log p_rest − log q_rest),   q_rest = Σ_{j∉S} q_j

(scaled by T²; q the student's softmax at T, q_rest from a logsumexp over the ids outside S, never 1 − Σ).
KL_k is the KL divergence of the coarse-grained distributions, so 0 ≤ KL_k ≤ KL (data processing inequality),
it is zero when the student equals the teacher, it equals the full KL when k covers the vocabulary (p_rest = 0),
and the gap is the KL between the two tail distributions weighted by p_rest: the student is pushed to put the
teacher's leftover mass outside S, but not told how to spread it there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from worker.training.logits import head_rows, logits_fn, unwrap
from worker.training.render import ACTION, REASON


@dataclass
class LossSums:
    """Summed token losses of one micro-batch, per kind and per example (sums carry grad)."""

    reason_sum: Tensor  # scalar
    action_sum: Tensor  # scalar
    reason_count: int
    action_count: int
    example_sums: Tensor  # [B], sum of each example's supervised token losses
    example_counts: Tensor  # Long[B], supervised tokens per example


def final_hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Post-norm last hidden states [B, T, H] of a causal LM, without computing [B, T, V] logits.

    The outer model is called (so DDP/PEFT forward hooks run) with `logits_to_keep=1`, and the
    decoder's output is captured by a forward hook; models without `logits_to_keep` are run through
    their decoder directly.
    """
    inner = unwrap(model)
    decoder = inner.get_decoder()  # type: ignore[operator]
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        return decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = decoder.register_forward_hook(hook)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return captured[-1]


def _kl_rows(s_logits: Tensor, t_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) · T² per row. [n, V] fp32 × 2 → [n]."""
    log_p_s = F.log_softmax(s_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(t_logits / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return kl * (temperature * temperature)


def topk_kl_rows(s_logits: Tensor, t_ids: Tensor, t_logp: Tensor, temperature: float) -> Tensor:
    """Top-k + tail KL (module docstring) per row. s_logits [n, V] fp32, t_ids Long[n, k], t_logp [n, k + 1]
    (teacher log-probs of the ids, then of the leftover; normalised) → [n]. The teacher side carries no grad."""
    log_q = F.log_softmax(s_logits / temperature, dim=-1)
    log_q_top = log_q.gather(-1, t_ids)
    # A finite fill instead of -inf keeps the gradient finite when S is the whole vocabulary (q_rest ≈ e^-1e4).
    log_q_rest = torch.logsumexp(log_q.scatter(-1, t_ids, -1e4), dim=-1, keepdim=True)
    log_q_all = torch.cat([log_q_top, log_q_rest], dim=-1)
    t_logp = t_logp.detach().float()
    # p = 0 (an empty tail) contributes 0, not 0·(-inf): clamp both logs before the product.
    kl = (t_logp.exp() * (t_logp.clamp(min=-1e4) - log_q_all.clamp(min=-1e4))).sum(-1)
    return kl * (temperature * temperature)


def _chunked_rows(
    fn: Callable[..., Tensor], inputs: list[Tensor], chunk_size: int, use_checkpoint: bool, is_last: bool
) -> Tensor:
    """Apply `fn` to row chunks of `inputs` (each [N, ...]) → concatenated [N] losses.

    Every chunk but the very last one of the loss is checkpointed: its logits are recomputed in
    backward instead of kept alive. The last chunk's logits are live when backward starts anyway
    (and autograd runs it first, as the newest node), so checkpointing it would only cost a matmul.
    """
    n = inputs[0].shape[0]
    outs = []
    for lo in range(0, n, chunk_size):
        part = [x[lo : lo + chunk_size] for x in inputs]
        if use_checkpoint and not (is_last and lo + chunk_size >= n):
            outs.append(checkpoint(fn, *part, use_reentrant=False))
        else:
            outs.append(fn(*part))
    return torch.cat(outs) if outs else inputs[0].new_zeros(0, dtype=torch.float32)


def compute_span_losses(
    student: nn.Module,
    batch: dict[str, Tensor],
    *,
    teacher: nn.Module | None = None,
    mode: Literal["span", "flat"] = "span",
    temperature: float = 1.0,
    chunk_size: int = 1024,
    vocab_size: int | None = None,
) -> LossSums:
    """Per-kind loss sums of one batch {"input_ids", "attention_mask", "kinds"} (each Long[B, T]).

    span mode: REASON targets → KL to the teacher at `temperature` (×T²) if a teacher is given, else
    CE; ACTION targets → CE. flat mode: every supervised target is one kind — KL reported in
    reason_* when a teacher is given, else CE reported in action_*. `vocab_size` (the tokenizer's
    real vocabulary) slices student and teacher logits to their first `vocab_size` columns, for
    embedding matrices padded to different sizes; without it the logit widths must match.
    """
    if mode not in ("span", "flat"):
        raise ValueError(f"mode must be 'span' or 'flat', not {mode!r}")
    if chunk_size < 1 or temperature <= 0:
        raise ValueError("chunk_size must be ≥ 1 and temperature > 0")
    input_ids, kinds = batch["input_ids"], batch["kinds"]
    attn = batch.get("attention_mask", torch.ones_like(input_ids)).bool()
    offline = (batch["topk_ids"], batch["topk_logp"]) if "topk_ids" in batch else None
    if offline is not None and (teacher is not None or mode != "span"):
        raise ValueError("an offline teacher signal (topk_ids) is used in span mode, without a teacher model")
    bsz = input_ids.shape[0]

    hidden = final_hidden_states(student, input_ids, attn.long())  # [B, T, H]
    tgt_kind = kinds[:, 1:]
    sup = ((tgt_kind == REASON) | (tgt_kind == ACTION)) & attn[:, 1:] & attn[:, :-1]  # [B, T-1]
    if mode == "flat":
        use_kl = sup if teacher is not None else torch.zeros_like(sup)
    else:
        use_kl = sup & (tgt_kind == REASON) if teacher is not None or offline else torch.zeros_like(sup)
    use_ce = sup & ~use_kl
    is_reason = (tgt_kind == REASON) if mode == "span" else torch.full_like(sup, teacher is not None)

    s_head = logits_fn(student)
    width = vocab_size

    def s_logits_of(h: Tensor) -> Tensor:
        logits = s_head(h)  # matmul in the model dtype/autocast, transform and softmax in fp32
        return logits if width is None else logits[:, :width]

    grad_on = torch.is_grad_enabled() and hidden.requires_grad
    targets = input_ids[:, 1:]

    # CE rows: [n_ce, H] hidden, [n_ce] targets; KL rows come after them.
    ce_b, ce_t = use_ce.nonzero(as_tuple=True)
    kl_b, kl_t = use_kl.nonzero(as_tuple=True)
    ce_rows = _chunked_rows(
        lambda h, y: F.cross_entropy(s_logits_of(h), y, reduction="none"),
        [hidden[ce_b, ce_t], targets[ce_b, ce_t]],
        chunk_size,
        grad_on,
        is_last=(teacher is None and offline is None) or kl_b.numel() == 0,
    )

    if teacher is not None and kl_b.numel() > 0:
        t_head = logits_fn(teacher)
        with torch.no_grad():
            t_hidden = final_hidden_states(teacher, input_ids, attn.long())[kl_b, kl_t]  # [n_kl, H_t]
        s_width, t_width = head_rows(student), head_rows(teacher)
        if width is None and s_width != t_width:
            raise ValueError(
                f"student ({s_width}) and teacher ({t_width}) logits differ in width; pass vocab_size="
                "len(tokenizer) to compare them on the tokenizer's real vocabulary"
            )

        def kl_fn(h: Tensor, ht: Tensor) -> Tensor:
            with torch.no_grad():
                t_logits = t_head(ht)
                t_logits = t_logits if width is None else t_logits[:, :width]
            return _kl_rows(s_logits_of(h), t_logits, temperature)

        kl_rows = _chunked_rows(kl_fn, [hidden[kl_b, kl_t], t_hidden], chunk_size, grad_on, is_last=True)
    elif offline is not None and kl_b.numel() > 0:
        t_ids, t_logp = offline
        if t_ids.shape[0] != kl_b.numel():
            raise ValueError(f"the offline signal has {t_ids.shape[0]} rows for {kl_b.numel()} reason positions")
        kl_rows = _chunked_rows(
            lambda h, i, lp: topk_kl_rows(s_logits_of(h), i, lp, temperature),
            [hidden[kl_b, kl_t], t_ids, t_logp], chunk_size, grad_on, is_last=True,
        )
    else:
        kl_rows = hidden[kl_b, kl_t].float().sum(-1)  # empty [0], still attached to the graph

    # One [N] vector of per-position losses with its example index and kind.
    rows = torch.cat([kl_rows, ce_rows])
    row_b = torch.cat([kl_b, ce_b])
    row_t = torch.cat([kl_t, ce_t])
    row_reason = is_reason[row_b, row_t]
    # Empty selections still hang off the graph (zero grads), so backward() never fails.
    zero = hidden[:0].float().sum()
    reason_sum = rows[row_reason].sum() + zero
    action_sum = rows[~row_reason].sum() + zero
    example_sums = torch.zeros(bsz, dtype=rows.dtype, device=rows.device).index_add(0, row_b, rows) + zero
    example_counts = torch.bincount(row_b, minlength=bsz)
    n_reason = int(row_reason.sum())
    return LossSums(
        reason_sum=reason_sum,
        action_sum=action_sum,
        reason_count=n_reason,
        action_count=int(row_b.numel()) - n_reason,
        example_sums=example_sums,
        example_counts=example_counts,
    )


class SpanWeighting(nn.Module):
    """Combines L_reason and L_action: fixed α·L_r + β·L_a, or learnable uncertainty weighting.

    learnable: each kind k has a log-variance s_k (init 0) and contributes exp(-s_k)·L_k + s_k;
    α and β are not used. The minimum over s_k is at s_k = log L_k, so a weight exp(-s_k) = 1/L_k
    stays positive and finite — it cannot collapse to zero. A kind passed as None (no tokens of that
    kind in the accumulation window) is skipped entirely: no loss, no regulariser, no gradient to
    its s_k. `reg_scale` multiplies the s_k terms; when a window is split into m micro-batches
    whose losses are summed, pass 1/m so the regulariser counts once per window.
    """

    def __init__(self, mode: Literal["fixed", "learnable"] = "fixed", alpha: float = 1.0, beta: float = 1.0):
        super().__init__()
        if mode not in ("fixed", "learnable"):
            raise ValueError(f"mode must be 'fixed' or 'learnable', not {mode!r}")
        self.mode = mode
        self.alpha, self.beta = float(alpha), float(beta)
        # [s_reason, s_action]; present in both modes so checkpoints have the same keys.
        self.log_vars = nn.Parameter(torch.zeros(2), requires_grad=mode == "learnable")

    def forward(self, l_reason: Tensor | None, l_action: Tensor | None, *, reg_scale: float = 1.0) -> Tensor:
        terms: list[Tensor] = []
        for k, (loss, fixed) in enumerate(((l_reason, self.alpha), (l_action, self.beta))):
            if loss is None:
                continue
            if self.mode == "fixed":
                terms.append(fixed * loss)
            else:
                s = self.log_vars[k]
                terms.append(torch.exp(-s) * loss + reg_scale * s)
        if not terms:
            return self.log_vars.sum() * 0.0
        return torch.stack([t.reshape(()).to(terms[0].dtype) for t in terms]).sum()

    def effective_weights(self) -> dict[str, float]:
        if self.mode == "fixed":
            return {"reason": self.alpha, "action": self.beta}
        w = torch.exp(-self.log_vars.detach()).tolist()
        return {"reason": float(w[0]), "action": float(w[1])}


def curriculum_weights(complexity: Tensor, progress: float) -> Tensor:
    """w_i = 1 + p·(2·c_i − 1), c_i ∈ [0, 1] the dataset-normalised complexity, p ∈ [0, 1] progress.

    At p = 0 every example weighs 1; as p grows, the hardest (c = 1) weigh up to 1 + p and the
    simplest (c = 0) down to 1 − p ≥ 0. The weights are centred on the dataset midpoint, not on the
    batch, so they do not depend on how a window is split into micro-batches.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 1.0 + p * (2.0 * complexity.clamp(0.0, 1.0) - 1.0)


def curriculum_term(example_losses: Tensor, complexity: Tensor, progress: float) -> Tensor:
    """mean_i(w_i · ℓ_i) over the batch, ℓ_i [B] per-example losses, w from `curriculum_weights`."""
    if example_losses.numel() == 0:
        return example_losses.sum()
    w = curriculum_weights(complexity.to(example_losses.device, example_losses.dtype), progress)
    return (w * example_losses).mean()


def project_conflicting(g: list[Tensor | None], onto: list[Tensor | None]) -> list[Tensor | None]:
    """PCGrad step: g minus its component along `onto` when ⟨g, onto⟩ < 0, else g unchanged.

    Lists are per parameter, None = zero gradient; dot products and norms run in float64.
    """
    pairs = [(a, b) for a, b in zip(g, onto, strict=True) if a is not None and b is not None]
    if not pairs:
        return list(g)
    dot = torch.stack([(a.double() * b.double()).sum() for a, b in pairs]).sum()
    norm2 = torch.stack([b.double().pow(2).sum() for b in onto if b is not None]).sum()
    if not bool(dot < 0) or not bool(norm2 > 0):
        return list(g)
    scale = dot / norm2
    out: list[Tensor | None] = []
    for a, b in zip(g, onto, strict=True):
        if b is None:
            out.append(a)
        elif a is None:  # None is a zero gradient; its projection is not zero
            out.append((-scale * b.double()).to(b.dtype))
        else:
            out.append((a.double() - scale * b.double()).to(a.dtype))
    return out


def pcgrad(g_reason: list[Tensor | None], g_action: list[Tensor | None]) -> list[Tensor | None]:
    """PCGrad for two tasks (Yu et al. 2020): each gradient is projected onto the normal plane of the
    other's original gradient when they conflict (negative dot product); the results are summed.
    Lists are per parameter; None means no gradient (treated as zero; None only if both are None).
    """
    r = project_conflicting(g_reason, g_action)
    a = project_conflicting(g_action, g_reason)
    out: list[Tensor | None] = []
    for x, y in zip(r, a, strict=True):
        out.append(x if y is None else y if x is None else x + y)
    return out
