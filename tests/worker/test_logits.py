"""Logits exactly as the model's forward produces them: for every supported architecture, the chunked loss path
(final hidden states → head → the architecture's post-head transform) is checked against the model's own
`forward` on a tiny random configuration; an architecture with an unknown transform is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from contract.architectures import ARCHITECTURES, unsupported_architecture
from worker.context import BadJobInput, is_permanent
from worker.training.evaluate import evaluate_examples
from worker.training.logits import logits_fn
from worker.training.losses import compute_span_losses, final_hidden_states
from worker.training.models import load_model
from worker.training.render import ACTION, RenderedExample

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
             eos_token_id=2)
MOE = {"num_local_experts": 2, "num_experts_per_tok": 1}
EXTRA: dict[str, dict[str, Any]] = {
    "granite": {"logits_scaling": 4.0},
    "granitemoe": {"logits_scaling": 4.0, **MOE},
    "granitemoeshared": {"logits_scaling": 4.0, "shared_intermediate_size": 32, **MOE},
    "gemma2": {"final_logit_softcapping": 3.0},
    "gemma3_text": {"final_logit_softcapping": 3.0},
    "cohere": {"logit_scale": 0.25},
    "cohere2": {"logit_scale": 0.25},
    "mixtral": MOE,
    "qwen2_moe": {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 32},
    "qwen3_moe": {"num_experts": 2, "num_experts_per_tok": 1, "moe_intermediate_size": 32},
}
TRANSFORMED = {name for name, t in ARCHITECTURES.items() if t.kind != "none"}


def tiny_model(model_type: str) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    if model_type == "gemma3":  # multimodal: its forward does not soft-cap, even with a cap in text_config
        config = AutoConfig.for_model(
            model_type, text_config={**SMALL, "final_logit_softcapping": 3.0}, mm_tokens_per_image=4,
            vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": 28, "patch_size": 14})
    else:
        config = AutoConfig.for_model(model_type, **SMALL, **EXTRA.get(model_type, {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # large logits, so scaling and soft-capping change them a lot
        model.get_output_embeddings().weight.mul_(60)
    return model


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_the_loss_path_reproduces_the_forward_logits(model_type: str) -> None:
    model = tiny_model(model_type)
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits.float()
        hidden = final_hidden_states(model, ids, mask)
        ours = logits_fn(model)(hidden.reshape(-1, hidden.shape[-1])).reshape(reference.shape)
        raw = model.get_output_embeddings()(hidden).float()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-4)
    if model_type in TRANSFORMED:  # the head alone is far off: the transform matters
        assert float((raw - reference).abs().max()) > 1.0
    # the chunked CE over every position equals cross-entropy on the forward's own logits
    batch = {"input_ids": ids, "attention_mask": mask, "kinds": torch.full_like(ids, ACTION)}
    with torch.no_grad():
        sums = compute_span_losses(model, batch, chunk_size=7)
    expected = F.cross_entropy(reference[:, :-1].reshape(-1, reference.shape[-1]), ids[:, 1:].reshape(-1))
    assert sums.action_count == ids[:, 1:].numel()
    torch.testing.assert_close(sums.action_sum / sums.action_count, expected, rtol=1e-5, atol=1e-5)


def test_evaluation_uses_the_transformed_logits() -> None:
    model = tiny_model("granite")
    ids = torch.randint(3, 90, (1, 10), generator=torch.Generator().manual_seed(2))
    example = RenderedExample(ids[0].tolist(), [ACTION] * 10, truncated=False)
    report = evaluate_examples(model, [example], exact_match_max=0)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    expected = float(F.cross_entropy(logits[0, :-1], ids[0, 1:]))
    assert report["action"]["nll"] == pytest.approx(expected, rel=1e-5)


def test_an_architecture_with_an_unknown_transform_is_refused(tmp_path: Path) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model("gpt2", n_layer=1, n_embd=16, n_head=2, vocab_size=50).save_pretrained(tmp_path / "gpt2")
    AutoConfig.for_model("llama", **SMALL).save_pretrained(tmp_path / "llama")
    assert "model_type 'gpt2' is not supported" in (unsupported_architecture(tmp_path / "gpt2") or "")
    assert unsupported_architecture(tmp_path / "llama") is None
    assert unsupported_architecture(tmp_path / "no-such-folder") is None  # a hub id: the worker checks
    with pytest.raises(BadJobInput, match="model_type 'gpt2' is not supported") as caught:
        load_model(str(tmp_path / "gpt2"), torch.device("cpu"), 50)  # refused from config.json, no weights read
    assert is_permanent(caught.value)
