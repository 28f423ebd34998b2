"""Tiny, fully offline models for tests and the synthetic task.

`build_tiny_model` trains a byte-level BPE tokenizer on a small corpus with the `tokenizers` library
(the 256-symbol byte alphabet is always included, so any text encodes), wraps it in a fast
`PreTrainedTokenizerFast` with `<s>`/`</s>`/`<pad>` and the ChatML markers `<|im_start|>`/`<|im_end|>`
as special tokens, builds a randomly initialised `LlamaForCausalLM` (seeded, untied embeddings) and
`save_pretrained()`s both into one directory that `AutoTokenizer` / `AutoModelForCausalLM` load
offline. Same arguments and seed give byte-identical files. A Llama config is used on purpose: in
transformers 5 some model types (qwen2) force their own tokenizer class over the saved one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS: list[str] = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IM_START, IM_END]

# ChatML (Qwen style, simplified). Content is emitted verbatim, so spans can be located in the
# rendered string; `<|im_end|>` closes every turn. Tool schemas, when given, go in a system block.
CHATML_TEMPLATE: str = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- for message in messages %}"
    "{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- else %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

DEFAULT_CORPUS: list[str] = [
    "Thought: I need to look this up.\nAction: search[Paris population]\nObservation: 2.1 million",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "NYC"}}\n</tool_call>',
    "<think>\nThe user wants the weather.\n</think>\nIt is 21°C in New York.",
    "Final Answer: the capital of France is Paris.",
]


def build_tokenizer(
    corpus: list[str],
    *,
    vocab_size: int = 512,
    special_tokens: list[str] | None = None,
    bos_token: str | None = BOS_TOKEN,
    eos_token: str | None = EOS_TOKEN,
    pad_token: str | None = PAD_TOKEN,
    chat_template: str | None = None,
) -> Any:
    """A byte-level BPE `PreTrainedTokenizerFast` trained on `corpus` with `special_tokens` (default: `<s>`,
    `</s>`, `<pad>`, `<|im_start|>`, `<|im_end|>`); bos/eos/pad name some of them (or None). Any family's
    control tokens can be given, so tests render real chat templates without downloading a tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS if special_tokens is None else special_tokens)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets must cover every character (spaces included) for span mapping.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, 256 + len(specials)),
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus) + DEFAULT_CORPUS, trainer=trainer)
    named = {t for t in (bos_token, eos_token, pad_token) if t}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        extra_special_tokens=[t for t in specials if t not in named],
        clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        hf_tok.chat_template = chat_template
    return hf_tok


def build_tiny_model(
    out_dir: Path,
    corpus: list[str],
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 1024,
    chat_template: str | None = None,
    seed: int = 0,
    embedding_rows: int | None = None,
) -> Path:
    """Train a tokenizer on `corpus`, build a random Llama model, save both into `out_dir`.

    `vocab_size` is the BPE target (at least the 256 byte symbols + 5 specials; a small corpus may
    yield fewer merges). The model's embedding matrix has `len(tokenizer)` rows, or `embedding_rows`
    when given (≥ len(tokenizer)) to mimic checkpoints whose matrices are padded (Qwen2.5 style).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok = build_tokenizer(corpus, vocab_size=vocab_size, chat_template=chat_template)
    hf_tok.save_pretrained(out_dir)

    n_vocab = len(hf_tok)
    rows = n_vocab if embedding_rows is None else embedding_rows
    if rows < n_vocab:
        raise ValueError(f"embedding_rows={rows} is smaller than the tokenizer ({n_vocab} tokens)")
    config = LlamaConfig(
        vocab_size=rows,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
    )
    # fork_rng: seeding must not disturb the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir)
    return out_dir
