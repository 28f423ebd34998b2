"""Token views for the web page's training view: each of the first dataset records rendered with the
student tokenizer exactly as training renders it (``render.render_examples``), each token with its kind.

Written once per job (by its first attempt) by the ``distill`` handler into ``token_views.jsonl`` of the run
directory (name, caps and line shape in ``contract.token_views``) and served by the API, which cannot
tokenize (``app`` never imports transformers). Training decides reason / action / context; observation
tokens are context to training, and are marked here from the observation spans so the page can show where
tool output went: the tokens' decoded pieces are laid end to end and each observation span's text is looked
up in that string in order. When the pieces do not add up to the decoded example (a byte-level token split
inside a character), observations are left as context rather than guessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from contract.spans import DatasetRecord
from contract.token_views import KIND_LETTERS, MAX_TOKENS, MAX_TRAJECTORIES, TOKEN_VIEWS, TokenView
from worker.context import JobContext
from worker.fence import Fence, LeaseLost
from worker.training.render import ACTION, REASON, RenderedExample, RenderError, Syntax, render_examples

_LETTER = {REASON: KIND_LETTERS["reason"], ACTION: KIND_LETTERS["action"]}


def _observation_texts(messages: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]]) -> list[str]:
    ordered = sorted(spans, key=lambda s: (s["message"], s["start"]))
    return [messages[s["message"]]["text"][s["start"]:s["end"]] for s in ordered if s["kind"] == "observation"]


def example_view(example: RenderedExample, tokenizer: Any, observations: Sequence[str], trajectory_id: str,
                 index: int) -> TokenView:
    """One rendered example as a token view (at most ``MAX_TOKENS`` tokens)."""
    ids = example.input_ids[:MAX_TOKENS]
    kinds = example.kinds[:MAX_TOKENS]
    pieces = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False)
    letters = [_LETTER.get(k, KIND_LETTERS["context"]) for k in kinds]
    whole = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if "".join(pieces) == whole:
        starts, pos = [], 0
        for piece in pieces:
            starts.append(pos)
            pos += len(piece)
        cursor, t = 0, 0
        for text in observations:
            at = whole.find(text, cursor) if text else -1
            if at < 0:
                continue
            end = at + len(text)
            while t < len(ids) and starts[t] + len(pieces[t]) <= at:
                t += 1
            u = t
            while u < len(ids) and starts[u] < end:
                if letters[u] == KIND_LETTERS["context"]:
                    letters[u] = KIND_LETTERS["observation"]
                u += 1
            cursor = end
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    eot = [i for i, (tok, k) in enumerate(zip(ids, kinds, strict=True)) if k == ACTION and tok in specials]
    return {"trajectory_id": trajectory_id, "example": index, "turn": example.turn,
            "truncated": example.truncated or len(example.input_ids) > MAX_TOKENS,
            "tokens": pieces, "kinds": "".join(letters), "eot": eot}


def token_views(records: Sequence[DatasetRecord], tokenizer: Any, *, max_seq_len: int,
                limit: int = MAX_TRAJECTORIES, syntax: Syntax = "native") -> Iterator[TokenView]:
    """The views of the first ``limit`` records (train split first); records that cannot be rendered are left out."""
    ordered = sorted(records, key=lambda r: r.get("split") != "train")[:limit]
    for record in ordered:
        try:
            result = render_examples(record["messages"], record["spans"], tokenizer, max_seq_len=max_seq_len,
                                     tools=record.get("tools"), syntax=syntax)
        except RenderError:
            continue
        observations = _observation_texts(record["messages"], record["spans"])
        for i, example in enumerate(result.examples):
            yield example_view(example, tokenizer, observations, str(record["id"]), i)


def write_token_views(out_dir: Path, records: Sequence[DatasetRecord], student_model: str, *, max_seq_len: int,
                      fence: Fence, syntax: Syntax = "native") -> int:
    """Write ``token_views.jsonl`` into the run directory (assembled aside, promoted by the attempt's fence);
    returns the number of lines. The trajectory id leads each line (``contract.token_views.line_prefix``)."""
    from worker.training.models import load_tokenizers

    tokenizer, _ = load_tokenizers(student_model, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / TOKEN_VIEWS
    fence.check()
    scratch = fence.scratch(target)
    n = 0
    with open(scratch, "w", encoding="utf-8") as fh:
        for view in token_views(records, tokenizer, max_seq_len=max_seq_len, syntax=syntax):
            fh.write(json.dumps(view, ensure_ascii=False) + "\n")
            n += 1
    fence.promote(scratch, target)
    return n


def write_for_job(ctx: JobContext, student_model: str, max_seq_len: int, records: Sequence[DatasetRecord],
                  syntax: Syntax = "native") -> None:
    """The distill handler's call: write the views, logging instead of failing (they are for people, not
    training), except a lost lease, which stops the attempt like any other write. A later attempt of the job
    keeps the file an earlier one wrote: the dataset is a frozen snapshot and the student the same."""
    if (ctx.out_dir / TOKEN_VIEWS).exists():
        return
    try:
        n = write_token_views(ctx.out_dir, records, student_model, max_seq_len=max_seq_len, fence=ctx.fence,
                              syntax=syntax)
    except LeaseLost:
        raise
    except Exception as exc:
        ctx.log(f"token views not written: {type(exc).__name__}: {exc}", level="warning")
        return
    ctx.log(f"token views of {n} examples written to {TOKEN_VIEWS}")
