"""Property tests of the span losses against plain full-logit reference implementations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from worker.training.losses import (
    SpanWeighting,
    compute_span_losses,
    curriculum_term,
    curriculum_weights,
    pcgrad,
    project_conflicting,
)
from worker.training.render import ACTION, NONE, REASON


@pytest.fixture(scope="module")
def student(tiny_model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def teacher(padded_teacher_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(padded_teacher_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def vocab(tiny_model_dir: Path) -> int:
    return len(AutoTokenizer.from_pretrained(tiny_model_dir))


def random_batch(vocab: int, seed: int = 0, bsz: int = 3, length: int = 23) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (bsz, length), generator=g)
    kinds = torch.randint(0, 3, (bsz, length), generator=g)
    attn = torch.ones(bsz, length, dtype=torch.long)
    attn[1, length - 6:] = 0  # right padding, with (ignored) supervised kinds under it
    return {"input_ids": ids, "attention_mask": attn, "kinds": kinds}


def reference(student: Any, batch: dict[str, torch.Tensor], *, teacher: Any = None, temperature: float = 1.0,
              vocab_size: int | None = None, flat: bool = False) -> dict[str, torch.Tensor]:
    """Full [B, T, V] logits, F.kl_div / F.cross_entropy(ignore_index=-100), shifted by hand."""
    ids, attn, kinds = batch["input_ids"], batch["attention_mask"], batch["kinds"]
    logits = student(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    width = vocab_size or logits.shape[-1]
    logits = logits[..., :width]
    nxt = kinds[:, 1:]
    ok = (attn[:, 1:] * attn[:, :-1]).bool()
    sup = (nxt > 0) & ok
    reason = sup if flat else sup & (nxt == REASON)
    action = sup if flat else sup & (nxt == ACTION)
    out: dict[str, torch.Tensor] = {}
    if teacher is not None:
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, attention_mask=attn).logits[:, :-1, :width].float()
        out["kl"] = F.kl_div(F.log_softmax(logits[reason] / temperature, -1),
                             F.log_softmax(t_logits[reason] / temperature, -1),
                             log_target=True, reduction="sum") * temperature**2
    labels = ids[:, 1:].clone()
    labels[~(reason if teacher is None else torch.zeros_like(reason))] = -100
    out["ce_reason"] = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
    labels = ids[:, 1:].clone()
    labels[~action] = -100
    out["ce_action"] = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
    out["n_reason"], out["n_action"] = reason.sum(), action.sum()
    return out


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    a, b = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
    return abs(float(a) - float(b)) <= rel * max(abs(float(b)), 1e-6)


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 1024])
def test_span_mode_with_teacher_matches_reference(student: Any, teacher: Any, vocab: int, chunk_size: int) -> None:
    batch = random_batch(vocab)
    got = compute_span_losses(student, batch, teacher=teacher, chunk_size=chunk_size, temperature=2.0,
                              vocab_size=vocab)
    ref = reference(student, batch, teacher=teacher, temperature=2.0, vocab_size=vocab)
    assert close(got.reason_sum, ref["kl"]) and close(got.action_sum, ref["ce_action"])
    assert (got.reason_count, got.action_count) == (int(ref["n_reason"]), int(ref["n_action"]))
    assert close(got.example_sums.sum(), got.reason_sum + got.action_sum)
    assert int(got.example_counts.sum()) == got.reason_count + got.action_count


@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_span_mode_without_teacher_is_cross_entropy_everywhere(student: Any, vocab: int, chunk_size: int) -> None:
    batch = random_batch(vocab, seed=1)
    got = compute_span_losses(student, batch, chunk_size=chunk_size)
    ref = reference(student, batch)
    assert close(got.reason_sum, ref["ce_reason"]) and close(got.action_sum, ref["ce_action"])


def test_flat_mode_matches_reference(student: Any, teacher: Any, vocab: int) -> None:
    batch = random_batch(vocab, seed=2)
    kl = compute_span_losses(student, batch, teacher=teacher, mode="flat", chunk_size=4, vocab_size=vocab)
    ref = reference(student, batch, teacher=teacher, vocab_size=vocab, flat=True)
    assert close(kl.reason_sum, ref["kl"]) and kl.reason_count == int(ref["n_reason"])
    assert float(kl.action_sum.detach()) == 0.0 and kl.action_count == 0
    ce = compute_span_losses(student, batch, mode="flat", chunk_size=4)
    ref = reference(student, batch, flat=True)
    assert close(ce.action_sum, ref["ce_action"]) and ce.action_count == int(ref["n_action"])
    assert float(ce.reason_sum.detach()) == 0.0 and ce.reason_count == 0


def test_kl_is_zero_for_identical_models(student: Any, vocab: int) -> None:
    batch = random_batch(vocab, seed=3)
    got = compute_span_losses(student, batch, teacher=student, temperature=1.5, chunk_size=6)
    assert got.reason_count > 0 and abs(float(got.reason_sum.detach())) < 1e-5


def test_temperature_scales_by_t_squared(student: Any, teacher: Any, vocab: int) -> None:
    batch = random_batch(vocab, seed=4)
    t = 3.0
    got = compute_span_losses(student, batch, teacher=teacher, temperature=t, vocab_size=vocab)
    ref = reference(student, batch, teacher=teacher, temperature=t, vocab_size=vocab)
    assert close(got.reason_sum, ref["kl"])
    unscaled = ref["kl"] / t**2  # the plain KL of the softened distributions
    assert not close(got.reason_sum, unscaled) and close(got.reason_sum / t**2, unscaled)


def test_padded_teacher_vocab_is_compared_on_the_real_vocabulary(student: Any, teacher: Any, vocab: int) -> None:
    assert teacher.get_output_embeddings().weight.shape[0] == vocab + 8
    batch = random_batch(vocab, seed=5)
    with pytest.raises(ValueError, match="vocab_size"):
        compute_span_losses(student, batch, teacher=teacher)
    got = compute_span_losses(student, batch, teacher=teacher, vocab_size=vocab, chunk_size=8)
    ref = reference(student, batch, teacher=teacher, vocab_size=vocab)
    assert close(got.reason_sum, ref["kl"])


def capture_hidden(model: Any) -> tuple[list[torch.Tensor], Any]:
    store: list[torch.Tensor] = []

    def hook(_m: Any, _a: Any, out: Any) -> None:
        out.last_hidden_state.retain_grad()
        store.append(out.last_hidden_state)

    return store, model.get_decoder().register_forward_hook(hook)


@pytest.mark.parametrize("use_teacher", [False, True])
def test_unsupervised_positions_get_exactly_zero_gradient(student: Any, teacher: Any, vocab: int,
                                                          use_teacher: bool) -> None:
    batch = random_batch(vocab, seed=6)
    store, handle = capture_hidden(student)
    try:
        got = compute_span_losses(student, batch, teacher=teacher if use_teacher else None, chunk_size=5,
                                  vocab_size=vocab)
        (got.reason_sum + 2 * got.action_sum).backward()
    finally:
        handle.remove()
        student.zero_grad(set_to_none=True)
    grad = store[-1].grad  # [B, T, H]
    nxt, attn = batch["kinds"][:, 1:], batch["attention_mask"].bool()
    supervised = torch.zeros_like(attn)
    supervised[:, :-1] = (nxt > 0) & attn[:, 1:] & attn[:, :-1]
    assert torch.all(grad[~supervised] == 0)
    assert torch.all(grad[supervised].abs().sum(-1) > 0)


def test_shifted_labels_position_t_is_decided_by_token_t_plus_1(student: Any) -> None:
    ids = torch.tensor([[10, 11, 12, 13, 14, 15, 16]])
    kinds = torch.tensor([[ACTION, NONE, NONE, NONE, NONE, ACTION, NONE]])  # token 0 can never be a target
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "kinds": kinds}
    store, handle = capture_hidden(student)
    try:
        got = compute_span_losses(student, batch)
        got.action_sum.backward()
    finally:
        handle.remove()
        student.zero_grad(set_to_none=True)
    assert got.action_count == 1 and got.reason_count == 0
    logits = student(input_ids=ids).logits[0]
    assert close(got.action_sum, F.cross_entropy(logits[4:5], ids[0, 5:6]))  # position 4 predicts token 5
    grad = store[-1].grad[0]
    assert grad[4].abs().sum() > 0 and torch.all(grad[torch.arange(7) != 4] == 0)


def test_no_supervised_positions_gives_zero_sums_that_backpropagate(student: Any, vocab: int) -> None:
    batch = random_batch(vocab, seed=7)
    batch["kinds"] = torch.zeros_like(batch["kinds"])
    got = compute_span_losses(student, batch)
    assert (got.reason_count, got.action_count) == (0, 0)
    total = got.reason_sum + got.action_sum + got.example_sums.sum()
    assert float(total.detach()) == 0.0 and total.requires_grad
    total.backward()
    student.zero_grad(set_to_none=True)


def test_no_saved_tensor_holds_more_than_a_chunk_of_logits(student: Any, teacher: Any, vocab: int) -> None:
    """Backward keeps only chunk inputs alive: nothing vocabulary-wide beyond `chunk_size` rows is saved."""
    batch = random_batch(vocab, seed=8, bsz=4, length=40)
    saved: list[torch.Size] = []
    weights = {p.data_ptr() for m in (student, teacher) for p in m.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in weights:  # parameters (e.g. lm_head.weight.T) are not activations
            saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        got = compute_span_losses(student, batch, teacher=teacher, chunk_size=4, vocab_size=vocab)
    assert got.reason_count + got.action_count > 40
    logit_like = [s for s in saved if len(s) >= 2 and s[-1] in (vocab, vocab + 8)]
    assert all(s.numel() <= 4 * (vocab + 8) for s in logit_like), logit_like
    (got.reason_sum + got.action_sum).backward()
    student.zero_grad(set_to_none=True)


def test_works_under_no_grad(student: Any, teacher: Any, vocab: int) -> None:
    batch = random_batch(vocab, seed=9)
    with torch.no_grad():
        got = compute_span_losses(student, batch, teacher=teacher, vocab_size=vocab, chunk_size=3)
    ref = reference(student, batch, teacher=teacher, vocab_size=vocab)
    assert close(got.reason_sum, ref["kl"]) and not got.reason_sum.requires_grad


# ---- weighting, curriculum, PCGrad --------------------------------------------------------------


def test_fixed_weighting() -> None:
    w = SpanWeighting("fixed", alpha=0.3, beta=2.0)
    assert float(w(torch.tensor(2.0), torch.tensor(5.0))) == pytest.approx(0.3 * 2 + 2.0 * 5)
    assert float(w(None, torch.tensor(5.0))) == pytest.approx(10.0)
    assert w.effective_weights() == {"reason": 0.3, "action": 2.0}
    assert not any(p.requires_grad for p in w.parameters())


def test_learnable_weights_converge_to_inverse_loss_and_never_collapse() -> None:
    w = SpanWeighting("learnable")
    assert w.effective_weights() == {"reason": 1.0, "action": 1.0}
    opt = torch.optim.Adam(w.parameters(), lr=0.1)
    l_reason, l_action = torch.tensor(2.5), torch.tensor(0.02)
    for _ in range(1200):
        opt.zero_grad()
        w(l_reason, l_action).backward()
        opt.step()
    s = w.log_vars.detach()
    # the minimum of exp(-s)·L + s is s = log L: finite, so exp(-s) = 1/L > 0
    assert torch.allclose(s, torch.log(torch.stack([l_reason, l_action])), atol=1e-2)
    eff = w.effective_weights()
    assert eff["reason"] == pytest.approx(1 / 2.5, rel=2e-2) and eff["action"] == pytest.approx(1 / 0.02, rel=2e-2)
    assert all(v > 0 for v in eff.values())


def test_learnable_skips_a_kind_without_tokens() -> None:
    w = SpanWeighting("learnable")
    w(None, torch.tensor(3.0)).backward()
    assert w.log_vars.grad is not None
    assert float(w.log_vars.grad[0]) == 0.0 and float(w.log_vars.grad[1]) != 0.0
    out = w(torch.tensor(1.0), torch.tensor(1.0), reg_scale=0.25)  # s = 0 → exp(0)·1 twice
    assert float(out.detach()) == pytest.approx(2.0)


def test_curriculum_term() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0])
    complexity = torch.tensor([0.0, 0.5, 1.0])
    assert float(curriculum_term(losses, complexity, 0.0)) == pytest.approx(2.0)
    w = curriculum_weights(complexity, 1.0)
    assert w.tolist() == pytest.approx([0.0, 1.0, 2.0])
    assert float(curriculum_term(losses, complexity, 1.0)) == pytest.approx((0 + 2 + 6) / 3)
    # harder examples weigh more as progress grows, and weights don't depend on the batch
    w_half = curriculum_weights(complexity, 0.5)
    assert w_half[2] > w_half[1] > w_half[0] and w_half[2] < w[2]
    assert curriculum_weights(complexity[2:], 0.5).tolist() == pytest.approx(w_half[2:].tolist())
    grads = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    curriculum_term(grads, complexity, 1.0).backward()
    assert grads.grad is not None and grads.grad.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])


def test_pcgrad_removes_the_conflicting_component() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        r = [torch.randn(4, 3, generator=g), None, torch.randn(5, generator=g)]
        a = [torch.randn(4, 3, generator=g), torch.randn(2, generator=g), torch.randn(5, generator=g)]
        dot = sum(float((x * y).sum()) for x, y in zip(r, a, strict=True) if x is not None)
        r_proj, a_proj = project_conflicting(r, a), project_conflicting(a, r)
        out = pcgrad(r, a)
        for x, y, z in zip(r_proj, a_proj, out, strict=True):
            expected = y if x is None else x + y
            assert z is not None and torch.allclose(z, expected)
        if dot < 0:
            new_dot = sum(float((x * y).sum()) for x, y in zip(r_proj, a, strict=True) if x is not None)
            assert new_dot >= -1e-5 and abs(new_dot) < 1e-4
            assert sum(float((x * y).sum()) for x, y in zip(a_proj, r, strict=True) if y is not None) >= -1e-5
        else:
            assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(r_proj, r, strict=True))
    assert pcgrad([None], [None]) == [None]


def test_pcgrad_conflicting_pair_known_result() -> None:
    r, a = [torch.tensor([1.0, 0.0])], [torch.tensor([-1.0, 1.0])]
    (out,) = pcgrad(r, a)
    # r' = r - (-1/2)·a = [0.5, 0.5]; a' = a - (-1/1)·r = [0, 1]
    assert out is not None and torch.allclose(out, torch.tensor([0.5, 1.5]))


def test_lora_wrapped_student_matches_reference(tiny_model_dir: Path, vocab: int) -> None:
    peft = pytest.importorskip("peft")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    batch = random_batch(vocab, seed=10)
    got = compute_span_losses(model, batch, chunk_size=5)
    ref = reference(model, batch)
    assert close(got.action_sum, ref["ce_action"]) and close(got.reason_sum, ref["ce_reason"])
    (got.reason_sum + got.action_sum).backward()
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None for p in lora)
