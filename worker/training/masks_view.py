"""Terminal preview of span masks: which rendered tokens are reason, action or context.

`format_masks` decodes runs of same-kind tokens and colours them with ANSI codes (reason blue,
action green, context dim), followed by a legend with token counts; with `color=False` it uses
bracket markup instead (`⟦R:…⟧` reason, `⟦A:…⟧` action, context as is), which tests and plain
logs can read. Backs `distillery masks show`. Print the coloured form with `typer.echo`/`print`,
or through rich as `Text.from_ansi(...)`.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

from worker.training.render import ACTION, NONE, REASON, RenderedExample

_ANSI = {REASON: "\x1b[34m", ACTION: "\x1b[32m", NONE: "\x1b[2m"}
_RESET = "\x1b[0m"
_TAGS = {REASON: "R", ACTION: "A"}


def _runs(example: RenderedExample) -> list[tuple[int, list[int]]]:
    pairs = zip(example.kinds, example.input_ids, strict=True)
    return [(kind, [tok for _, tok in run]) for kind, run in groupby(pairs, key=lambda p: p[0])]


def format_masks(example: RenderedExample, tokenizer: Any, *, color: bool = True) -> str:
    """The rendered example as text with its token kinds marked, then a legend and counts."""
    parts: list[str] = []
    for kind, ids in _runs(example):
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if color:
            parts.append(f"{_ANSI[kind]}{text}{_RESET}")
        elif kind in _TAGS:
            parts.append(f"⟦{_TAGS[kind]}:{text}⟧")
        else:
            parts.append(text)
    n_none = len(example.kinds) - example.n_reason - example.n_action
    if color:
        legend = (f"{_ANSI[REASON]}reason{_RESET} {example.n_reason} · {_ANSI[ACTION]}action{_RESET} "
                  f"{example.n_action} · {_ANSI[NONE]}context{_RESET} {n_none}")
    else:
        legend = f"⟦R:…⟧ reason {example.n_reason} · ⟦A:…⟧ action {example.n_action} · context {n_none}"
    header = f"example {example.id}" if example.id else "example"
    footer = f"{legend} · total {len(example.kinds)} tokens" + (" · truncated" if example.truncated else "")
    return f"{header}\n{''.join(parts)}\n{footer}"
