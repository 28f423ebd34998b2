"""The template matrix: real chat templates of the student families people distill into, rendered over generated
trajectories (user-first and system-first, with and without tools, multi-turn, reasoning, emoji/CJK), checked
token by token against the independent reference in `families.py`.

Each family's tokenizer is a byte-level BPE trained on the fly with that family's special tokens (no downloads);
its eos is chosen as the family's checkpoints declare it (Qwen2.5/3 with the base checkpoints' `<|endoftext|>`,
Gemma's `<eos>`, Llama 3.2's `<|end_of_text|>`), so the end of turn can only come from the template.
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from tests.worker.families import FAMILIES, Family, build_family_tokenizer, reference_examples, rewritten_turns
from worker.training.render import ACTION, RenderError, render_examples

WORDS = ["the", "price", "of", "apples", "is", "twelve", "dollars", "check", "stock", "total", "order", "shop"]
UNICODE = ["🎉", "🙂👍", "東京の天気", "价格", "café", "naïve", "データ"]
LOOKUP = {"name": "lookup", "description": "Price of an item",
          "parameters": {"type": "object", "properties": {"item": {"type": "string"}}}}
TOOLS = [{"type": "function", "function": LOOKUP}]
FEATURES = ("system", "tool", "multi", "think", "unicode")
SCENARIOS = [dict(zip(FEATURES, flags, strict=True)) for flags in itertools.product((False, True), repeat=5)]


def _sentence(rng: random.Random, unicode: bool, n: int = 5) -> str:
    pool = WORDS + (UNICODE if unicode else [])
    return " ".join(rng.choice(pool) for _ in range(n)).capitalize() + "."


def _assistant(rng: random.Random, think: bool, unicode: bool, action: str) -> tuple[str, list[dict[str, Any]]]:
    parts: list[tuple[str, str]] = []
    if think:
        parts.append(("reason", "<think>\n" + _sentence(rng, unicode, 7) + "\n</think>\n"))
    parts.append(("reason", _sentence(rng, unicode) + "\n"))
    parts.append(("action", action))
    text, spans, pos = "", [], 0
    for kind, piece in parts:
        spans.append({"start": pos, "end": pos + len(piece), "kind": kind})
        text += piece
        pos += len(piece)
    return text, spans


def trajectory(seed: int, *, system: bool, tool: bool, multi: bool, think: bool,
               unicode: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """A canonical trajectory (messages, spans, tools) shaped like the ingest parsers' output."""
    rng = random.Random(seed)
    messages: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []

    def add(role: str, text: str, own: list[dict[str, Any]], **extra: Any) -> None:
        spans.extend({"message": len(messages), **s} for s in own)
        messages.append({"role": role, "text": text, **extra})

    if system:
        add("system", "You are a shop assistant. " + _sentence(rng, unicode), [])
    for turn in range(3 if multi else 1):
        add("user", "Question " + str(turn) + ": " + _sentence(rng, unicode) + "?", [])
        for step in range(rng.randint(1, 2) if tool else 0):
            call = json.dumps({"name": "lookup", "arguments": {"item": rng.choice(WORDS + UNICODE)}},
                              ensure_ascii=False)
            text, own = _assistant(rng, think, unicode, "<tool_call>\n" + call + "\n</tool_call>")
            add("assistant", text, own)
            result = json.dumps({"price": rng.randint(1, 99), "note": _sentence(rng, unicode, 3)}, ensure_ascii=False)
            add("tool", result, [{"start": 0, "end": len(result), "kind": "observation"}],
                tool_call_id=f"call{turn}{step}xyz")
        text, own = _assistant(rng, think, unicode, "The answer is " + str(rng.randint(1, 500)) + ".")
        add("assistant", text, own)
    return messages, spans, TOOLS if tool else None


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    corpus = []
    for i, scenario in enumerate(SCENARIOS):
        messages, _, _ = trajectory(1000 + i, **scenario)
        corpus += [m["text"] for m in messages]
    return {f.name: build_family_tokenizer(f, corpus * 3 + [f.template_text()]) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_family_renders_every_trajectory_like_the_reference(family: Family, tokenizers: dict[str, Any]) -> None:
    tok = tokenizers[family.name]
    checked = refused = split = 0
    for i, scenario in enumerate(SCENARIOS):
        messages, spans, tools = trajectory(i, **scenario)
        tags = {k for k, v in scenario.items() if v}
        if tags & family.refuses:
            with pytest.raises(RenderError):
                render_examples(messages, spans, tok, max_seq_len=100_000, tools=tools)
            refused += 1
            continue
        result = render_examples(messages, spans, tok, max_seq_len=100_000, tools=tools)
        expected = reference_examples(family, tok, messages, spans, tools)
        got = [(e.input_ids, e.kinds) for e in result.examples]
        assert got == expected, (family.name, scenario)
        assert result.stats.split_turns == len(rewritten_turns(family, messages, spans)), scenario
        split += result.stats.split_turns
        checked += 1
    assert checked >= 8 and refused == sum(bool({k for k, v in s.items() if v} & family.refuses) for s in SCENARIOS)
    # the families that rewrite history do so in the generated trajectories (the reference checks how)
    assert (split > 0) == (family.rewrites != "none")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_every_trained_turn_ends_with_the_family_end_of_turn(family: Family, tokenizers: dict[str, Any]) -> None:
    tok = tokenizers[family.name]
    eot_ids = tok(family.eot, add_special_tokens=False)["input_ids"]
    user_first = {"system": False, "tool": False, "multi": True, "think": False, "unicode": True}
    messages, spans, tools = trajectory(7, **user_first)
    result = render_examples(messages, spans, tok, max_seq_len=100_000, tools=tools)
    trained = sum(1 for m in messages if m["role"] == "assistant")
    hits = 0
    for ex in result.examples:
        for t in range(len(ex.input_ids) - len(eot_ids) + 1):
            if ex.input_ids[t : t + len(eot_ids)] == eot_ids and ex.kinds[t + len(eot_ids) - 1] == ACTION:
                hits += 1
    assert hits == trained, (family.name, hits, trained)
