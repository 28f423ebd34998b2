"""Truncation to `max_seq_len`: whole messages only, the window with the most supervised tokens, and what was
dropped counted (DESIGN §5). The reference is a brute force over every window."""

from __future__ import annotations

from typing import Any

from tests.worker.render_helpers import call, eot_token, kind_text, long_trajectory, msg, traj
from worker.training.data import prepare_examples
from worker.training.render import ACTION, REASON, render_examples, render_trajectory


def _supervised(kinds: list[int]) -> int:
    return sum(1 for k in kinds[1:] if k)


def brute_force(messages: list[dict[str, Any]], spans: list[dict[str, Any]], tok: Any,
                max_seq_len: int) -> tuple[int, list[tuple[int, int]]]:
    """The most supervised tokens any fitting window (system messages + messages[first..last]) keeps, and the
    windows that keep that many."""
    n_head = 0
    while messages[n_head]["role"] == "system":
        n_head += 1
    ends = sorted({s["message"] for s in spans if s["kind"] != "observation"})
    best, winners = 0, []
    for first in range(n_head, len(messages)):
        for last in (e for e in ends if e >= first):
            keep = list(range(n_head)) + list(range(first, last + 1))
            index = {k: j for j, k in enumerate(keep)}
            sub = [messages[k] for k in keep]
            sub_spans = [{**s, "message": index[s["message"]]} for s in spans if s["message"] in index]
            ex = render_trajectory(sub, sub_spans, tok, max_seq_len=1 << 20)
            if ex is None or len(ex.input_ids) > max_seq_len:
                continue
            got = _supervised(ex.kinds)
            if got > best:
                best, winners = got, [(first, last)]
            elif got == best:
                winners.append((first, last))
    return best, winners


def test_truncation_keeps_the_window_with_the_most_supervised_tokens(tok: Any) -> None:
    messages, spans = long_trajectory(6)
    full = render_trajectory(messages, spans, tok, max_seq_len=100_000)
    assert full is not None
    limit = len(full.input_ids) // 2
    result = render_examples(messages, spans, tok, max_seq_len=limit)
    (ex,) = result.examples
    assert ex.truncated and len(ex.input_ids) <= limit
    best, _ = brute_force(messages, spans, tok, limit)
    assert _supervised(ex.kinds) == best
    action, reason = kind_text(tok, ex, ACTION), kind_text(tok, ex, REASON)
    kept = [i for i in range(6) if f"Paris population {i}" in action]
    assert kept == list(range(kept[0], kept[-1] + 1)) and 0 < len(kept) < 6  # contiguous whole steps
    for i in kept:
        assert call("search", {"query": f"Paris population {i}"}) in action
        assert f"Thought: step {i} needs a search.\n" in reason
    assert "You are a helpful agent." in tok.decode(ex.input_ids)  # the system message is always kept
    stats = result.stats
    assert stats.truncated_examples == 1
    assert stats.truncated_tokens == len(full.input_ids) - len(ex.input_ids)
    assert stats.truncated_supervised_tokens == _supervised(full.kinds) - _supervised(ex.kinds)


def test_truncation_prefers_later_steps_when_they_hold_more_supervision(tok: Any) -> None:
    turns = [msg("system", (None, "You are a helpful agent.")), msg("user", (None, "Find the population."))]
    for i in range(3):  # short early steps
        turns += [msg("assistant", ("action", f"search[{i}]")), msg("tool", ("observation", f"Observation: {i}"))]
    long_reason = "Thought: " + "the population of Paris grows every year and " * 6
    for i in range(2):  # long, supervision-heavy late steps behind a long observation
        turns += [msg("tool", ("observation", "Observation: " + "nothing useful here. " * 30)),
                  msg("assistant", ("reason", long_reason + f"step {i}.\n"), ("action", f"finish[{i}]"))]
    messages, spans = traj(*turns)
    late_only = render_trajectory(*traj(turns[0], *turns[-1:]), tok, max_seq_len=1 << 20)
    assert late_only is not None
    limit = len(late_only.input_ids) + 12
    ex = render_trajectory(messages, spans, tok, max_seq_len=limit)
    assert ex is not None and ex.truncated and len(ex.input_ids) <= limit
    best, _ = brute_force(messages, spans, tok, limit)
    assert _supervised(ex.kinds) == best
    action = kind_text(tok, ex, ACTION)
    assert "finish[" in action and long_reason in kind_text(tok, ex, REASON)  # a long late step is kept ...
    assert "search[" not in action  # ... not the earliest prefix of short steps


def test_truncation_drops_leading_context_when_the_first_step_does_not_fit(tok: Any) -> None:
    huge = "Find the population. " + "It is a long story. " * 120
    messages, spans = traj(
        msg("system", (None, "You are a helpful agent.")),
        msg("user", (None, huge)),
        msg("assistant", ("action", "Final Answer: 2.1 million")),
    )
    ex = render_trajectory(messages, spans, tok, max_seq_len=64)
    assert ex is not None and ex.truncated and len(ex.input_ids) <= 64
    text = tok.decode(ex.input_ids)
    assert "You are a helpful agent." in text and "long story" not in text
    assert kind_text(tok, ex, ACTION) == "Final Answer: 2.1 million" + eot_token(tok)


def test_an_example_no_window_fits_is_skipped_as_too_long(tok: Any) -> None:
    messages, spans = traj(msg("user", (None, "q")), msg("assistant", ("action", "word " * 200)))
    result = render_examples(messages, spans, tok, max_seq_len=32)
    assert result.examples == [] and result.skipped == "too_long"


def test_the_data_report_counts_what_truncation_dropped(chatml_tok: Any) -> None:
    messages, spans = long_trajectory(6)
    long_one = {"id": "long", "messages": messages, "spans": spans, "split": "train"}
    too_long = {"id": "huge", "split": "train", "messages": [{"role": "user", "text": "q"},
                                                              {"role": "assistant", "text": "word " * 300}],
                "spans": [{"message": 1, "start": 0, "end": 1500, "kind": "action"}]}
    full = render_trajectory(messages, spans, chatml_tok, max_seq_len=100_000)
    assert full is not None
    limit = len(full.input_ids) // 2
    data = prepare_examples([long_one, too_long], chatml_tok, max_seq_len=limit)  # type: ignore[list-item]
    report = data.report()["train"]
    assert report["examples"] == 1 and report["skipped_records"] == {"too_long": 1}
    assert report["truncated_examples"] == 1
    kept = data.train.examples[0]
    assert report["truncated_tokens"] == len(full.input_ids) - len(kept.input_ids) > 0
    assert report["truncated_supervised_tokens"] == _supervised(full.kinds) - _supervised(kept.kinds) > 0
