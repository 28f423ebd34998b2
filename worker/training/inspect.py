"""The worker side of ``distillery masks show``: render one canonical trajectory with the student's
own tokenizer and chat template, exactly as training will, and mark each token with its kind.

Where the trajectory comes from (the database, a request body, a dataset record) is the caller's
business (``cli.masks``); this module takes canonical messages and spans only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.training.masks_view import format_masks
from worker.training.render import RenderResult, Syntax, render_examples


def syntax_line(result: RenderResult, syntax: Syntax) -> str | None:
    """What became of the trajectory's tool calls: rendered natively, or why they fell back (None: no calls)."""
    if result.stats.native_rendered:
        return "tool calls: native (the chat template's own syntax)"
    if result.note:
        return f"tool calls: FALLBACK — {result.note}"
    return "tool calls: canonical Hermes text (tool_call_syntax=hermes)" if syntax == "hermes" else None


def show_masks(messages: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]], tools: Any, tokenizer: str,
               *, max_seq_len: int = 4096, color: bool = True, syntax: Syntax = "native") -> str:
    """Every training example of the trajectory as text with its token kinds marked (see ``format_masks``):
    one, or more when the template rewrites history and a turn is trained in an example of its own; or a
    note saying why nothing of it would be trained. A first line says how tool calls were rendered (natively
    in the family's syntax, or the canonical text and why) when the trajectory has structured calls."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    result = render_examples(messages, spans, tok, max_seq_len=max_seq_len, tools=tools, syntax=syntax)
    line = syntax_line(result, syntax) if any(m.get("tool_calls") for m in messages) else None
    head = f"{line}\n" if line else ""
    if not result.examples:
        why = result.skipped or "no_supervised_tokens"
        return f"{head}(nothing of this trajectory would be trained: {why})"
    shown = [format_masks(example, tok, color=color) for example in result.examples]
    if len(shown) == 1:
        return head + shown[0]
    return head + "\n\n".join(f"── example {i + 1} of {len(shown)} ──\n{text}" for i, text in enumerate(shown))
