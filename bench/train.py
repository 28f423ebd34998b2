"""Trainer throughput and loss memory: span-level losses vs plain causal-LM cross-entropy (DESIGN §8).

On one random-init Llama student and one synthetic batch whose tokens are ~25% reason, ~20% action and the
rest context (prompts, observations), each timed step is forward + backward of the loss (the optimizer step
is the same for every variant, so it is left out of the ratio):

    plain CE        model(input_ids, labels=...) — HF computes [B, T, V] logits and a masked CE
    span CE         compute_span_losses without a teacher (CE on reason and action positions only)
    naive KL+CE     student and teacher full [B, T, V] logits, KL on reason / CE on action positions
    span KL+CE      compute_span_losses with the teacher (chunked, gathered positions only)

Memory of the loss stage (from the final hidden states to the scalar loss, i.e. what the LM head and the
losses add): on CUDA, torch.cuda.max_memory_allocated above the baseline; on CPU — where tracemalloc does not
see torch and RSS is blurred by the allocator — the bytes of distinct tensor storages autograd saves for
backward (torch.autograd.graph.saved_tensors_hooks) plus the teacher logits the loss keeps alive. The
CPU number is what the loss pins until backward; transient temporaries are not counted for either variant.

    python bench/train.py                                  # CPU, 'small' student/teacher, ~1 minute
    python bench/train.py --device cuda --student-config 0.5b --teacher-config 7b --seq-len 4096 --batch 8

On CUDA it also reports MFU = 6·N_student·tokens/s (+ 2·N_teacher·tokens/s for the teacher forward) over the
peak dense bf16 FLOPs (--peak-tflops, H200: 989). Targets: span CE ≤ 1.15× plain CE time on CPU; span loss
memory ≤ 50% of naive; 0.5B + 7B on one H200 ≥ 20k supervised tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from common import print_table

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=128, vocab_size=4096),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=704, vocab_size=32000),
    "small-teacher": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, num_key_value_heads=6,
                          intermediate_size=1024, vocab_size=32000),
    # Qwen2.5 dimensions, model_type llama (random init; no download).
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6),
    "7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, vocab_size=152064, rope_theta=1e6),
}  # fmt: skip
REAL_VOCAB = {"0.5b": 151665, "1.5b": 151665, "7b": 151665}  # Qwen2.5 tokenizer: the padded rows are unused


def build(name: str, device: Any, dtype: Any, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(max_position_embeddings=32768, attn_implementation="sdpa", **CONFIGS[name])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    return model.to(dtype)


def make_batch(batch: int, seq_len: int, vocab: int, device: Any, seed: int = 0) -> dict[str, Any]:
    """Random ids; kinds per position: context 55% (prompt + observations), reason 25%, action 20%."""
    import torch

    from worker.training.render import ACTION, NONE, REASON

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq_len), generator=g)
    kinds = torch.full((batch, seq_len), NONE, dtype=torch.long)
    prompt = int(0.15 * seq_len)
    step = max(8, seq_len // 8)  # repeating [reason 25% | action 20% | observation 15%]-ish of each step
    for start in range(prompt, seq_len, step):
        r_end = min(seq_len, start + int(0.30 * step))
        a_end = min(seq_len, r_end + int(0.24 * step))
        kinds[:, start:r_end] = REASON
        kinds[:, r_end:a_end] = ACTION
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "kinds": kinds.to(device),
    }


def naive_loss(student: Any, teacher: Any, batch: dict[str, Any], vocab: int) -> Any:
    """Full-logit reference: [B, T, V] logits of both models, KL on reason targets, CE on action targets."""
    import torch
    import torch.nn.functional as F

    from worker.training.render import ACTION, REASON

    s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    s_logp = F.log_softmax(s_logits[:, :-1, :vocab].float(), dim=-1)
    kinds, targets = batch["kinds"][:, 1:], batch["input_ids"][:, 1:]
    ce = -s_logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    action = kinds == ACTION
    loss = ce[action].sum() / action.sum().clamp(min=1)
    if teacher is not None:
        with torch.no_grad():
            t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            t_logp = F.log_softmax(t_logits[:, :-1, :vocab].float(), dim=-1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
        reason = kinds == REASON
        loss = loss + kl[reason].sum() / reason.sum().clamp(min=1)
    return loss


def span_loss(student: Any, teacher: Any, batch: dict[str, Any], vocab: int, chunk: int) -> Any:
    from worker.training.losses import compute_span_losses

    sums = compute_span_losses(student, batch, teacher=teacher, chunk_size=chunk, vocab_size=vocab)
    return sums.reason_sum / max(sums.reason_count, 1) + sums.action_sum / max(sums.action_count, 1)


def plain_ce(student: Any, batch: dict[str, Any]) -> Any:
    labels = batch["input_ids"].masked_fill(batch["kinds"] == 0, -100)
    return student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss


def time_steps(fns: dict[str, Callable[[], Any]], steps: int, warmup: int, device: Any) -> dict[str, float]:
    """Median seconds per forward+backward, variants interleaved so background load hits all alike.
    A variant that runs out of GPU memory (the naive full-logit ones at long contexts) reports inf."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in fns}
    failed: set[str] = set()
    for i in range(warmup + steps):
        for name, fn in fns.items():
            if name in failed:
                continue
            sync()
            t0 = time.perf_counter()
            try:
                fn().backward()
                sync()
            except torch.cuda.OutOfMemoryError:
                failed.add(name)
                torch.cuda.empty_cache()
                continue
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: (statistics.median(v) if k not in failed else float("inf")) for k, v in times.items()}


def loss_stage_memory(fn: Callable[[], Any], device: Any) -> int:
    """Bytes the loss stage holds (see the module docstring for what is counted on CPU vs CUDA)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        try:
            loss = fn()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return -1
        peak = torch.cuda.max_memory_allocated() - base
        del loss
        return peak
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    del loss
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--student-config", default=None, choices=sorted(CONFIGS))
    parser.add_argument("--teacher-config", default=None, help="a config name or 'none'")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--mem-seq-len", type=int, default=None, help="sequence length of the memory measurement (CPU default 1024)"
    )
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU intra-op threads (default 1 on CPU: stable on a shared box)"
    )
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H200 SXM: 989)")
    args = parser.parse_args()

    import torch

    choice = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    on_gpu = device.type == "cuda"
    s_name = args.student_config or ("0.5b" if on_gpu else "small")
    t_name = args.teacher_config or ("7b" if on_gpu else "small-teacher")
    seq_len = args.seq_len or (4096 if on_gpu else 256)
    batch_size = args.batch or (8 if on_gpu else 4)
    steps = args.steps or (10 if on_gpu else 4)
    vocab = min(REAL_VOCAB.get(s_name, CONFIGS[s_name]["vocab_size"]), CONFIGS[s_name]["vocab_size"])
    if t_name != "none":
        vocab = min(vocab, REAL_VOCAB.get(t_name, CONFIGS[t_name]["vocab_size"]))

    student = build(s_name, device, torch.float32, seed=0).train()
    teacher = None
    if t_name != "none":
        teacher = build(t_name, device, torch.bfloat16 if on_gpu else torch.float32, seed=1).eval()
        teacher.requires_grad_(False)
    batch = make_batch(batch_size, seq_len, vocab, device)
    supervised = int((batch["kinds"][:, 1:] != 0).sum())
    tokens = batch_size * seq_len
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else nullcontext

    def under_autocast(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with autocast():
                return fn()

        return run

    fns = {
        "plain CE (HF labels)": under_autocast(lambda: plain_ce(student, batch)),
        "span CE": under_autocast(lambda: span_loss(student, None, batch, vocab, args.chunk_size)),
    }
    if teacher is not None:
        fns["naive KL+CE (full logits)"] = under_autocast(lambda: naive_loss(student, teacher, batch, vocab))
        fns["span KL+CE"] = under_autocast(lambda: span_loss(student, teacher, batch, vocab, args.chunk_size))
    print(
        f"device={device.type} student={s_name} teacher={t_name} batch={batch_size}x{seq_len} "
        f"supervised={supervised}/{tokens} vocab={vocab} threads={torch.get_num_threads()}"
    )
    secs = time_steps(fns, steps, args.warmup, device)

    n_student = sum(p.numel() for p in student.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters()) if teacher is not None else 0
    rows = []
    for name, s in secs.items():
        if s == float("inf"):
            rows.append([name, "OOM", "-", "-", "-"] + (["-"] if on_gpu else []))
            continue
        reference = secs["naive KL+CE (full logits)"] if "KL" in name else secs["plain CE (HF labels)"]
        ratio = f"{s / reference:.2f}x" if reference != float("inf") else "n/a (reference OOM)"
        row: list[object] = [name, f"{s * 1000:.0f}", ratio]
        row += [f"{tokens / s:,.0f}", f"{supervised / s:,.0f}"]
        if on_gpu:
            flops = 6 * n_student * tokens + (2 * n_teacher * tokens if "KL" in name else 0)
            row.append(f"{100 * flops / s / (args.peak_tflops * 1e12):.1f}%")
        rows.append(row)
    header = ["variant", "ms/step (fwd+bwd)", "time vs plain CE (KL: vs naive)", "tokens/s", "supervised tokens/s"]
    print_table("Throughput", header + (["MFU"] if on_gpu else []), rows)

    # Loss-stage memory: from detached final hidden states to the scalar loss (forward only), on a batch long
    # enough that the supervised rows span several chunks.
    from worker.training.losses import final_hidden_states

    batch = make_batch(batch_size, args.mem_seq_len or (seq_len if on_gpu else 1024), vocab, device, seed=1)
    with torch.no_grad(), autocast():
        hidden = final_hidden_states(student, batch["input_ids"], batch["attention_mask"])
        t_hidden = (
            final_hidden_states(teacher, batch["input_ids"], batch["attention_mask"]) if teacher is not None else None
        )
    hidden = hidden.detach().requires_grad_(True)

    class _Frozen(torch.nn.Module):
        """Replays precomputed hidden states so only the head + loss are measured."""

        def __init__(self, model: Any, h: Any) -> None:
            super().__init__()
            self.model, self.h = model, h

        def get_output_embeddings(self) -> Any:
            return self.model.get_output_embeddings()

        def get_decoder(self) -> Any:
            h = self.h

            class _D(torch.nn.Module):
                def forward(self, **_: Any) -> Any:
                    return type("Out", (), {"last_hidden_state": h})()

            return _D()

        def forward(self, **_: Any) -> Any:
            logits = self.model.get_output_embeddings()(self.h)
            return type("Out", (), {"logits": logits})()

    s_frozen = _Frozen(student, hidden)
    t_frozen = _Frozen(teacher, t_hidden) if teacher is not None else None
    mem_rows = []
    pairs = [("CE only", None)] + ([("KL+CE", t_frozen)] if t_frozen is not None else [])
    for label, t in pairs:
        if on_gpu:
            torch.cuda.empty_cache()
        naive = loss_stage_memory(under_autocast(lambda t=t: naive_loss(s_frozen, t, batch, vocab)), device)
        ours = loss_stage_memory(
            under_autocast(lambda t=t: span_loss(s_frozen, t, batch, vocab, args.chunk_size)), device
        )
        if naive < 0 or ours < 0:
            mem_rows.append([label, "OOM" if naive < 0 else f"{naive / 2**20:,.1f}", "OOM" if ours < 0 else "-", "-"])
            continue
        mem_rows.append([label, f"{naive / 2**20:,.1f}", f"{ours / 2**20:,.1f}", f"{100 * ours / max(naive, 1):.1f}%"])
    what = "peak allocated above baseline" if on_gpu else "bytes saved for backward"
    shape = f"{batch_size}x{batch['input_ids'].shape[1]}, supervised {int((batch['kinds'][:, 1:] != 0).sum())}"
    print_table(
        f"Loss-stage memory ({what}, MiB; batch {shape}, chunk {args.chunk_size})",
        ["loss", "naive full logits", "span (chunked)", "ratio"],
        mem_rows,
    )


if __name__ == "__main__":
    main()
