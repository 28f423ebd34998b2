"""The tiny offline model builder: deterministic, loadable through Auto*, any text encodes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.worker.conftest import TINY_CORPUS
from worker.training.tiny import CHATML_TEMPLATE, IM_END, IM_START, build_tiny_model


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_arguments_same_files_other_seed_other_weights(tmp_path: Path, chatml_model_dir: Path) -> None:
    again = build_tiny_model(tmp_path / "again", TINY_CORPUS, chat_template=CHATML_TEMPLATE, seed=0)
    assert digest(again) == digest(chatml_model_dir)
    other = build_tiny_model(tmp_path / "other", TINY_CORPUS, chat_template=CHATML_TEMPLATE, seed=1)
    assert digest(other)["tokenizer.json"] == digest(chatml_model_dir)["tokenizer.json"]
    assert digest(other)["model.safetensors"] != digest(chatml_model_dir)["model.safetensors"]


def test_seeding_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", ["hello world"], hidden_size=16, num_heads=2, intermediate_size=32)
    assert torch.equal(torch.rand(3), expected)


def test_loads_offline_with_special_tokens_and_offsets(tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tok.chat_template is None
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert model.config.model_type == "llama" and not model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.shape[0] == len(tok) <= 512
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    text = f"{IM_START}user\nunseen text: ∮ Ωmega 漢字 🦀{IM_END}"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"][0] == tok.convert_tokens_to_ids(IM_START)
    assert enc["input_ids"][-1] == tok.convert_tokens_to_ids(IM_END)
    assert tok.decode(enc["input_ids"]) == text
    assert enc["offset_mapping"][0] == (0, len(IM_START)) and enc["offset_mapping"][-1][1] == len(text)
    out = model(input_ids=torch.tensor([enc["input_ids"]]))
    assert out.logits.shape == (1, len(enc["input_ids"]), len(tok))


def test_chatml_template_renders(chatml_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(chatml_model_dir)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                {"role": "assistant", "content": "A"}]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    )
    with_tools = tok.apply_chat_template(messages, tokenize=False, tools=[{"name": "f"}],
                                         add_generation_prompt=True)
    assert with_tools.startswith("<|im_start|>system\nS\n\n# Tools\n<tools>\n{\"name\": \"f\"}\n</tools><|im_end|>\n")
    assert with_tools.count("<|im_start|>system") == 1 and with_tools.endswith("<|im_start|>assistant\n")


def test_padded_embedding_rows(padded_teacher_dir: Path, tiny_model_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(padded_teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(padded_teacher_dir)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) + 8
    assert (padded_teacher_dir / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
