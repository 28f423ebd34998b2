"""The worker side of ``distillery masks show``: render one canonical trajectory with the student's
own tokenizer and chat template, exactly as training will, and mark each token with its kind.

Where the trajectory comes from (the database, a request body, a dataset record) is the caller's
business (``cli.masks``); this module takes canonical messages and spans only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.training.masks_view import format_masks
from worker.training.render import render_trajectory


def show_masks(messages: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]], tools: Any, tokenizer: str,
               *, max_seq_len: int = 4096, color: bool = True) -> str:
    """The rendered trajectory as text with its token kinds marked (see ``format_masks``), or a note
    saying that nothing of it would be trained."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    example = render_trajectory(messages, spans, tok, max_seq_len=max_seq_len, tools=tools)
    if example is None:
        return "(no supervised tokens: nothing of this trajectory would be trained)"
    return format_masks(example, tok, color=color)
