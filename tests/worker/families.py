"""Model families for the template matrix: each real chat template (tests/data/templates/, sources in the README
there) with a tiny tokenizer trained on the fly that carries the family's own special tokens, and a short,
declarative description of where the template writes an assistant turn — written from the family's documented
prompt format, not from the renderer — that `reference_examples` uses as the independent reference.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.training.render import ACTION, NONE, REASON

TEMPLATES = Path(__file__).resolve().parent.parent / "data" / "templates"
KIND = {"reason": REASON, "action": ACTION, "observation": NONE}
THINK_OPEN, THINK_CLOSE = "<think>\n", "\n</think>\n"


def identity(text: str, _last: bool) -> tuple[str, list[int | None]]:
    return text, list(range(len(text)))


def qwen3_content(text: str, last: bool) -> tuple[str, list[int | None]]:
    """Qwen3 writes a kept turn as "<think>\\n" + reasoning + "\\n</think>\\n\\n" + answer; a last turn without
    reasoning gets an empty think block (template text). The doubled newline belongs to the text's newline."""
    if "</think>" not in text:
        if not last:
            return identity(text, last)
        head = "<think>\n\n</think>\n\n"
        return head + text, [None] * len(head) + list(range(len(text)))
    cut = text.index("</think>") + len("</think>\n")
    src: list[int | None] = [*range(cut), cut - 1, *range(cut, len(text))]
    return text[:cut] + "\n" + text[cut:], src


@dataclass(frozen=True)
class Family:
    name: str
    template: str  # file under tests/data/templates
    specials: list[str]
    bos: str | None
    eos: str | None
    pad: str | None
    header: str  # what the template writes right before an assistant content
    eot: str  # what it writes right after it, mid-conversation (the end of turn the model generates)
    content: Callable[[str, bool], tuple[str, list[int | None]]] = identity
    refuses: frozenset[str] = frozenset()  # scenario features the template raises on
    rewrites: str = "none"  # "none" | "history" (drops <think> before the last user turn) | "all"
    header_after_tool: str | None = None  # R1: an assistant turn after tool output has this header instead
    extra_vocab: list[str] = field(default_factory=list)
    # The documented tool-call syntax its template writes for structured calls (tests/worker/tool_parsers.py);
    # None: the template cannot take structured calls, training falls back to the canonical Hermes text.
    tool_calls: str | None = None
    parallel_calls: bool = True  # False: the template refuses more than one call per turn (Llama 3.x)

    def template_text(self) -> str:
        return (TEMPLATES / self.template).read_text(encoding="utf-8")


CHATML = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
          "<|eom_id|>", "<|python_tag|>"]
GEMMA = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
R1 = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁outputs▁begin｜>",
      "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"]

FAMILIES: list[Family] = [
    # eos is <|endoftext|> as in Qwen2.5 base checkpoints: the end of turn must not depend on it.
    Family("qwen2.5", "qwen2.5.jinja", CHATML, None, "<|endoftext|>", "<|endoftext|>",
           "<|im_start|>assistant\n", "<|im_end|>", tool_calls="hermes"),
    Family("qwen3", "qwen3.jinja", CHATML, None, "<|endoftext|>", "<|endoftext|>",
           "<|im_start|>assistant\n", "<|im_end|>", qwen3_content, rewrites="history",
           tool_calls="hermes"),
    Family("llama3.2", "llama3.2.jinja", LLAMA3, "<|begin_of_text|>", "<|end_of_text|>", "<|end_of_text|>",
           "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", tool_calls="llama3_json",
           parallel_calls=False),
    Family("smollm2", "smollm2.jinja", CHATML, "<|im_start|>", "<|im_end|>", "<|im_end|>",
           "<|im_start|>assistant\n", "<|im_end|>"),
    Family("mistral", "mistral.jinja", ["<unk>", "<s>", "</s>"], "<s>", "</s>", None, " [/INST] ", "</s>",
           refuses=frozenset({"tool"})),
    Family("gemma2", "gemma2.jinja", GEMMA, "<bos>", "<eos>", "<pad>", "<start_of_turn>model\n", "<end_of_turn>",
           refuses=frozenset({"system", "tool"})),
    Family("gemma3", "gemma3.jinja", GEMMA, "<bos>", "<eos>", "<pad>", "<start_of_turn>model\n", "<end_of_turn>",
           refuses=frozenset({"tool"})),
    Family("phi3", "phi3.jinja", ["<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>",
                                  "<|end|>"], "<s>", "<|endoftext|>", "<|endoftext|>", "<|assistant|>\n", "<|end|>"),
    Family("phi4-mini", "phi4-mini.jinja", ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
                                            "<|tool|>", "<|/tool|>"], "<|endoftext|>", "<|endoftext|>",
           "<|endoftext|>", "<|assistant|>", "<|end|>"),
    Family("granite3", "granite3.jinja", ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>"],
           "<|end_of_text|>", "<|end_of_text|>", "<|end_of_text|>", "<|start_of_role|>assistant<|end_of_role|>",
           "<|end_of_text|>"),
    Family("deepseek-r1", "deepseek-r1.jinja", R1, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
           "<｜end▁of▁sentence｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", rewrites="all",
           header_after_tool="<｜tool▁outputs▁end｜>"),
]


def build_family_tokenizer(family: Family, corpus: Sequence[str]) -> Any:
    from worker.training.tiny import build_tokenizer

    return build_tokenizer(list(corpus) + family.extra_vocab, vocab_size=600, special_tokens=family.specials,
                           bos_token=family.bos, eos_token=family.eos, pad_token=family.pad,
                           chat_template=family.template_text())


# ---- the independent reference ------------------------------------------------------------------------------


def _conv(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        item = {"role": m["role"], "content": m["text"]}
        if m["role"] == "tool":
            item.update({k: m[k] for k in ("tool_call_id", "name") if m.get(k)})
        out.append(item)
    return out


def _trained(m: dict[str, Any], spans: list[dict[str, Any]]) -> bool:
    return m["role"] == "assistant" and m.get("loss", True) is not False and any(
        s["kind"] in ("reason", "action") for s in spans)


def _rewritten(family: Family, messages: Sequence[dict[str, Any]], i: int) -> bool:
    """Whether the family's template drops turn i's reasoning when it renders the whole conversation."""
    if "</think>" not in messages[i]["text"] or family.rewrites == "none":
        return False
    if family.rewrites == "all":
        return not (family.header_after_tool and i > 0 and messages[i - 1]["role"] == "tool")
    last_user = max(j for j, m in enumerate(messages) if m["role"] == "user")
    return i < last_user


def rewritten_turns(family: Family, messages: list[dict[str, Any]], spans: list[dict[str, Any]]) -> list[int]:
    """The trained turns the family's template rewrites in the whole conversation."""
    by_msg = [[s for s in spans if s["message"] == i] for i in range(len(messages))]
    return [i for i, m in enumerate(messages) if _trained(m, by_msg[i]) and _rewritten(family, messages, i)]


def _kinds(tok: Any, text: str, owner: list[tuple[int, int] | None]) -> tuple[list[int], list[int]]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    kinds = []
    for a, b in enc["offset_mapping"]:
        counts = Counter(owner[c] for c in range(a, b) if owner[c] is not None)
        if not counts:
            kinds.append(NONE)
            continue
        best = max(counts.items(), key=lambda kv: (kv[1], kv[0][0]))  # ties → the later span
        kinds.append(best[0][1])
    return list(enc["input_ids"]), kinds


def reference_examples(family: Family, tok: Any, messages: list[dict[str, Any]], spans: list[dict[str, Any]],
                       tools: Any) -> list[tuple[list[int], list[int]]]:
    """The examples a correct renderer produces: (ids, kinds) of the whole conversation (its kept trained turns),
    then one per trained turn the template rewrites (its inference prompt + its text + the end of turn)."""
    by_msg = [[s for s in spans if s["message"] == i] for i in range(len(messages))]
    trained = [i for i, m in enumerate(messages) if _trained(m, by_msg[i])]
    whole = [i for i in trained if not _rewritten(family, messages, i)]
    out = []
    rendered = tok.apply_chat_template(_conv(messages), tools=tools or None, tokenize=False)
    owner: list[tuple[int, int] | None] = [None] * len(rendered)
    pos, n_span = 0, 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        header = family.header
        if family.header_after_tool and i > 0 and messages[i - 1]["role"] == "tool":
            header = family.header_after_tool
        at = rendered.index(header, pos) + len(header)
        if _rewritten(family, messages, i):
            pos = at
            continue
        content, src = family.content(m["text"], i == len(messages) - 1)
        assert rendered.startswith(content, at), (family.name, rendered[at:at + 80], content[:80])
        for j, s_idx in enumerate(src):
            if s_idx is None or i not in whole:
                continue
            for k, s in enumerate(by_msg[i]):
                if s["start"] <= s_idx < s["end"]:
                    owner[at + j] = (n_span + k, KIND[s["kind"]])
        n_span += len(by_msg[i]) + 1
        pos = at + len(content)
        if i in whole:
            assert rendered.startswith(family.eot, pos), (family.name, rendered[pos:pos + 40])
            for c in range(pos, pos + len(family.eot)):
                owner[c] = (n_span - 1, ACTION)
    if whole:
        out.append(_kinds(tok, rendered, owner))
    for k in (i for i in trained if i not in whole):
        prompt = tok.apply_chat_template(_conv(messages[:k]), tools=tools or None, tokenize=False,
                                         add_generation_prompt=True)
        text = messages[k]["text"]
        skip = len(THINK_OPEN) if prompt.endswith(THINK_OPEN) and text.startswith(THINK_OPEN) else 0
        full = prompt + text[skip:] + family.eot
        owner = [None] * len(full)
        base = len(prompt) - skip
        for n, s in enumerate(by_msg[k]):
            for c in range(max(s["start"], skip), s["end"]):
                owner[base + c] = (n, KIND[s["kind"]])
        for c in range(len(prompt) + len(text) - skip, len(full)):
            owner[c] = (len(by_msg[k]), ACTION)
        out.append(_kinds(tok, full, owner))
    return [(ids, kinds) for ids, kinds in out if any(kinds[1:])]


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
