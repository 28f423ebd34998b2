"""Flat mode (the token-level baseline of DESIGN §5): one loss over every assistant token, spanned or not, plus
each turn's end of turn; span and flat runs are scored on the same (span-mode) eval examples."""

from __future__ import annotations

from typing import Any

import torch

from tests.worker.render_helpers import eot_token, kind_text, msg, traj
from worker.training.data import prepare_examples, window_counts
from worker.training.render import ACTION, NONE, REASON, collate, render_trajectory


def _partly_spanned() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return traj(
        msg("system", (None, "You are a helpful agent.")),
        msg("user", (None, "Weather in NYC?")),
        msg("assistant", (None, "Let me think about it. "), ("reason", "I should look it up.\n"),
            ("action", "search[NYC weather]"), (None, " (done)")),
        msg("tool", ("observation", "Observation: 21 degrees")),
        msg("assistant", (None, "Uncovered closing words.")),
        msg("user", (None, "Thanks")),
        msg("assistant", ("action", "Old answer."), loss=False),
    )


def test_flat_supervises_every_assistant_token_and_nothing_else(tok: Any) -> None:
    messages, spans = _partly_spanned()
    span = render_trajectory(messages, spans, tok, max_seq_len=4096)
    flat = render_trajectory(messages, spans, tok, max_seq_len=4096, mode="flat")
    assert span is not None and flat is not None and span.input_ids == flat.input_ids
    eot = eot_token(tok)
    assert kind_text(tok, flat, ACTION) == (
        "Let me think about it. I should look it up.\nsearch[NYC weather] (done)" + eot
        + "Uncovered closing words." + eot)
    assert flat.n_reason == 0
    context = kind_text(tok, flat, NONE)
    for text in ("You are a helpful agent.", "Weather in NYC?", "Observation: 21 degrees", "Old answer."):
        assert text in context
    # every token span mode trains, flat trains too, and strictly more of them here
    assert all(f == ACTION for s, f in zip(span.kinds, flat.kinds, strict=True) if s != NONE)
    assert flat.n_action > span.n_action + span.n_reason


def test_flat_and_span_count_the_same_assistant_tokens_when_spans_cover_the_text(tok: Any) -> None:
    messages, spans = traj(msg("user", (None, "q")),
                           msg("assistant", ("reason", "Thought: look.\n"), ("action", "search[x]")),
                           msg("tool", ("observation", "Observation: y")),
                           msg("assistant", ("action", "Final Answer: y")))
    span = render_trajectory(messages, spans, tok, max_seq_len=4096)
    flat = render_trajectory(messages, spans, tok, max_seq_len=4096, mode="flat")
    assert span is not None and flat is not None
    assert [k != NONE for k in span.kinds] == [k != NONE for k in flat.kinds]
    assert span.n_reason > 0 and flat.n_reason == 0


def test_flat_trains_the_train_split_flat_and_scores_the_eval_split_by_span(chatml_tok: Any) -> None:
    messages, spans = _partly_spanned()
    records = [{"id": "a", "messages": messages, "spans": spans, "split": "train"},
               {"id": "b", "messages": messages, "spans": spans, "split": "eval"}]
    data = prepare_examples(records, chatml_tok, max_seq_len=4096, mode="flat")  # type: ignore[arg-type]
    (train,), (evaluation,) = data.train.examples, data.eval.examples
    assert REASON not in train.kinds and REASON in evaluation.kinds
    n_reason, n_action = window_counts([train], mode="flat", has_teacher=False)
    assert (n_reason, n_action) == (0, sum(1 for k in train.kinds[1:] if k != NONE))
    batch = collate([train], pad_id=0)
    assert int((batch["kinds"][:, 1:] == ACTION).sum()) == n_action == torch.tensor(train.kinds[1:]).ne(0).sum()
