"""A tiny GGUF file written with the ``gguf`` package (llama.cpp's own writer): a 2-layer Llama with
Q8_0-quantized weights and a byte-level BPE tokenizer, as llama.cpp's converter lays them out. A GGUF
import runs on it in seconds; the real SmolLM2 file is the slow test."""

from __future__ import annotations

import json
from pathlib import Path

HIDDEN, LAYERS, HEADS, FFN = 64, 2, 4, 128


def write_tiny_gguf(path: Path, corpus: list[str], *, seed: int = 0) -> Path:
    import gguf
    import numpy as np

    from worker.training.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS, build_tokenizer

    tok_dir = path.parent / f".{path.stem}-tokenizer"
    # transformers' GGUF converter builds a GPT-2 tokenizer, which adds <|endoftext|> when the file has none
    build_tokenizer(corpus, vocab_size=320, special_tokens=["<|endoftext|>", *SPECIAL_TOKENS]).save_pretrained(tok_dir)
    data = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    for added in data["added_tokens"]:
        vocab[added["content"]] = added["id"]
    specials = {a["content"] for a in data["added_tokens"] if a["special"]}
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<s>"])
    writer.add_eos_token_id(vocab["</s>"])
    writer.add_pad_token_id(vocab["<pad>"])
    writer.add_unk_token_id(vocab["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int, quantize: bool = True) -> None:
        if not quantize:
            writer.add_tensor(name, np.ones(shape, dtype=np.float32))
            return
        values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(values, q8), raw_dtype=q8)

    tensor("token_embd.weight", len(tokens), HIDDEN)
    for i in range(LAYERS):
        tensor(f"blk.{i}.attn_norm.weight", HIDDEN, quantize=False)
        tensor(f"blk.{i}.ffn_norm.weight", HIDDEN, quantize=False)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{name}.weight", HIDDEN, HIDDEN)
        tensor(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        tensor(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        tensor(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    tensor("output_norm.weight", HIDDEN, quantize=False)
    tensor("output.weight", len(tokens), HIDDEN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
