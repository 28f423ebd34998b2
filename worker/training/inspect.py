"""The worker side of ``distillery masks show``: render one canonical trajectory with the student's
own tokenizer and chat template, exactly as training will, and mark each token with its kind.

Where the trajectory comes from (the database, a request body, a dataset record) is the caller's
business (``cli.masks``); this module takes canonical messages and spans only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.training.masks_view import format_masks
from worker.training.render import render_examples


def show_masks(messages: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]], tools: Any, tokenizer: str,
               *, max_seq_len: int = 4096, color: bool = True) -> str:
    """Every training example of the trajectory as text with its token kinds marked (see ``format_masks``):
    one, or more when the template rewrites history and a turn is trained in an example of its own; or a
    note saying why nothing of it would be trained."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    result = render_examples(messages, spans, tok, max_seq_len=max_seq_len, tools=tools)
    if not result.examples:
        why = result.skipped or "no_supervised_tokens"
        return f"(nothing of this trajectory would be trained: {why})"
    shown = [format_masks(example, tok, color=color) for example in result.examples]
    if len(shown) == 1:
        return shown[0]
    return "\n\n".join(f"── example {i + 1} of {len(shown)} ──\n{text}" for i, text in enumerate(shown))
