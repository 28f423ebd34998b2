"""Trajectory → rendered examples: token ids + the kind (NONE/REASON/ACTION) of every token (DESIGN §5).

A canonical trajectory (messages + character spans) is rendered with the student tokenizer's chat template
(the built-in plain one when it has none, see `PLAIN_TEMPLATE_DOC`); `template` locates each message's text
in the rendered string and finds the end of each assistant turn. Spans are moved to rendered offsets and
mapped to tokens through the fast tokenizer's offset mapping: a token takes the kind of the span holding the
majority of its characters (ties go to the later span); a token touching no span is NONE. Observation spans
compete like any span but carry no loss.

Which tokens are trained:

- **span mode**: the reason/action spans of every supervised assistant turn (not only the last; a turn with
  ``loss: false`` or no reason/action span is context), plus its **end of turn**: the special token the
  template puts right after the content (and whitespace before it) is ACTION, so the student learns to stop.
  Template text after it (ChatML's newline) is never generated and stays NONE.
- **flat mode**: every token of every assistant turn not marked ``loss: false``, spanned or not, plus its end
  of turn, all ACTION (the token-level baseline of DESIGN §5: one loss, no span kinds).

**Templates that rewrite history** (Qwen3 drops ``<think>`` from turns before the last user message,
R1-style templates from every assistant turn): a trained turn whose text the full render does not contain is
trained in an example of its own, rendered as the model sees it at inference — the template's prompt for that
turn (its history rewritten as the template does) followed by the turn's text and its end of turn. Its reasoning
is trained, never silently lost; the full conversation still trains every turn it shows whole. `RenderStats`
counts these split turns, turns that could not be rendered at all, context the template did not show verbatim,
and truncation (`truncate`: whole messages only, the window with the most supervised tokens).

**Tool calls** are rendered in the family's own syntax by default (``syntax="native"``, `native`): structured
calls go to the template, spans are mapped onto its rendering; a template that cannot take them gets the
canonical Hermes text instead, counted in ``native_fallback``.

Loss uses shifted labels downstream: the kind of token t+1 decides the loss at position t.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from worker.training.native import Support, native_layout, native_support, uses_native
from worker.training.template import (
    PLAIN_TEMPLATE_DOC,
    Layout,
    RenderError,
    conversation_layout,
    generation_prompt,
    template_info,
)
from worker.training.tokens import KIND_CODES, encode, group_spans, token_kinds
from worker.training.truncate import best_window

NONE, REASON, ACTION = 0, 1, 2  # the codes of tokens.KIND_CODES
Mode = Literal["span", "flat"]
Syntax = Literal["native", "hermes"]


@dataclass
class RenderedExample:
    """One rendered example: token ids and the kind (NONE/REASON/ACTION) of each token."""

    input_ids: list[int]
    kinds: list[int]
    truncated: bool
    id: str | None = None
    turn: int | None = None  # the message index of a turn trained in an example of its own

    @property
    def n_reason(self) -> int:
        return self.kinds.count(REASON)

    @property
    def n_action(self) -> int:
        return self.kinds.count(ACTION)


@dataclass
class RenderStats:
    """What rendering split, dropped or shortened (summed over records by `add`)."""

    examples: int = 0
    split_turns: int = 0  # trained in their own example: the template rewrites them in the full conversation
    unrendered_turns: int = 0  # trained turns dropped: the template could not render their prompt
    context_not_verbatim: int = 0  # untrained messages the template rewrote or dropped (e.g. tool output)
    truncated_examples: int = 0
    truncated_tokens: int = 0  # tokens dropped by truncation
    truncated_supervised_tokens: int = 0  # of which supervised
    native_rendered: int = 0  # trajectories whose calls the template rendered in its own syntax (`native`)
    native_fallback: int = 0  # trajectories with calls rendered as canonical Hermes text (template can't take them)

    def add(self, other: RenderStats) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class RenderResult:
    """The examples of one trajectory; `skipped` says why there are none (no_supervised_tokens, too_long)."""

    examples: list[RenderedExample]
    stats: RenderStats = field(default_factory=RenderStats)
    skipped: str | None = None
    note: str | None = None  # why native rendering fell back to the canonical text, when it did


@dataclass
class _Job:
    """One trajectory being rendered."""

    messages: Sequence[Mapping[str, Any]]
    by_message: list[list[Mapping[str, Any]]]
    tokenizer: Any
    tools: Any
    flat: bool
    layout: Callable[[Sequence[Mapping[str, Any]]], Layout]
    native: bool = False


def _trains(message: Mapping[str, Any], spans: Sequence[Mapping[str, Any]], flat: bool) -> bool:
    if message.get("role") != "assistant" or message.get("loss", True) is False:
        return False
    return flat or any(s["kind"] in ("reason", "action") for s in spans)


def _message_ranges(job: _Job, k: int, base: Any, trained: bool, skip: int = 0) -> list[tuple[int, int, int]]:
    """Char ranges of message k's spans (flat: its whole text) through `base`, an offset → rendered map.
    Text before `skip` is not in this example's trained part (it sits in the prompt)."""
    text_len = len(job.messages[k]["text"])
    if trained and job.flat:
        return [(base(skip), base(text_len), ACTION)]
    out = []
    for s in job.by_message[k]:
        start, end = max(s["start"], skip), s["end"]
        if start < end:
            out.append((base(start), base(end), KIND_CODES[s["kind"]] if trained else NONE))
    return out


def _supervised(kinds: np.ndarray) -> int:
    """Positions trained (shifted labels: token 0 is never a target)."""
    return int(np.count_nonzero(kinds[1:]))


def _render_conversation(job: _Job, keep: list[int], trained: set[int],
                         layout: Layout | None = None) -> tuple[list[int], np.ndarray, np.ndarray, Layout]:
    """Render messages `keep` (in order), training the turns in `trained` that the render shows whole."""
    if layout is None:
        layout = job.layout([job.messages[k] for k in keep])
    ranges: list[tuple[int, int, int]] = []
    for j, k in enumerate(keep):
        placed = layout.placed[j]
        if placed is None:
            continue
        ranges += _message_ranges(job, k, placed.at, k in trained)
        if k in trained and layout.eot[j] is not None:
            a, b = layout.eot[j]  # type: ignore[misc]
            ranges.append((a, b, ACTION))
    ids, offsets = encode(job.tokenizer, layout.text)
    return ids, token_kinds(offsets, ranges), offsets, layout


def _head(messages: Sequence[Mapping[str, Any]]) -> int:
    n = 0
    while n < len(messages) and messages[n].get("role") == "system":
        n += 1
    return n


def _conversation_example(job: _Job, trained: list[int], layout: Layout, max_seq_len: int,
                          stats: RenderStats) -> tuple[list[int], np.ndarray, bool] | None:
    everything = list(range(len(job.messages)))
    ids, kinds, offsets, layout = _render_conversation(job, everything, set(trained), layout)
    if len(ids) <= max_seq_len:
        return ids, kinds, False
    # Token blocks per message from the full render: message i owns [start of its text, start of the next).
    starts = np.zeros(len(everything), dtype=np.int64)
    prev = 0
    for i, placed in enumerate(layout.placed):
        prev = placed.start if placed is not None else prev
        starts[i] = prev
    tok_at = np.searchsorted(offsets[:, 0], starts, side="left")
    edges = np.append(tok_at, len(ids))
    block_tokens = np.diff(edges)
    sup = np.concatenate([[0], np.cumsum(kinds != NONE)])
    block_sup = sup[edges[1:]] - sup[edges[:-1]]
    n_head = _head(job.messages)
    kept: dict[tuple[int, int], tuple[list[int], np.ndarray]] = {}

    def fits(window: tuple[int, int]) -> bool:
        keep = list(range(n_head)) + list(range(window[0], window[1] + 1))
        try:
            got_ids, got_kinds, _, _ = _render_conversation(job, keep, set(trained))
        except RenderError:  # e.g. a template that refuses a window not starting with a user turn
            return False
        kept[window] = got_ids, got_kinds
        return len(got_ids) <= max_seq_len and _supervised(got_kinds) > 0

    window = best_window(n_head, trained, block_tokens, block_sup, int(tok_at[0]), max_seq_len, fits)
    if window is None:
        return None
    got_ids, got_kinds = kept[window]
    stats.truncated_examples += 1
    stats.truncated_tokens += len(ids) - len(got_ids)
    stats.truncated_supervised_tokens += _supervised(kinds) - _supervised(got_kinds)
    return got_ids, got_kinds, True


def _turn_render(job: _Job, k: int, first: int, n_head: int) -> tuple[list[int], np.ndarray]:
    """Turn k alone, after the template's own prompt for it over the system messages + messages[first:k]
    (native: the conversation of those messages and turn k, rendered natively, training turn k)."""
    if job.native:
        keep = list(range(n_head)) + list(range(first, k)) + [k]
        ids, kinds, _, layout = _render_conversation(job, keep, {k})
        if layout.placed[-1] is None:
            raise RenderError(f"the chat template does not show turn {k} whole even as the last turn")
        return ids, kinds
    history = [job.messages[i] for i in list(range(n_head)) + list(range(first, k))]
    prompt, suffix = generation_prompt(history, job.tokenizer, job.tools)
    if not suffix:
        raise RenderError("the chat template adds no generation prompt, so a turn cannot be rendered alone")
    text = job.messages[k]["text"]
    # A generation prompt that already opens the turn's text (R1's "<think>\n") gives that part as prompt.
    skip = next((o for o in range(min(len(suffix), len(text)), 0, -1)
                 if suffix.endswith(text[:o]) and text[:o].strip()), 0)
    eot = template_info(job.tokenizer).eot_text if getattr(job.tokenizer, "chat_template", None) else (
        job.tokenizer.eos_token)
    base = len(prompt) - skip
    ranges = _message_ranges(job, k, lambda x: base + x, True, skip)
    full = prompt + text[skip:]
    if eot:
        ranges.append((len(full), len(full) + len(eot), ACTION))
        full += eot
    ids, offsets = encode(job.tokenizer, full)
    return ids, token_kinds(offsets, ranges)


def _turn_example(job: _Job, k: int, max_seq_len: int, stats: RenderStats) -> tuple[list[int], np.ndarray, bool]:
    n_head = min(_head(job.messages), k)
    ids, kinds = _turn_render(job, k, n_head, n_head)
    if len(ids) <= max_seq_len:
        return ids, kinds, False
    lo, hi, best = n_head + 1, k, None  # drop the fewest leading messages that makes it fit
    while lo <= hi:
        mid = (lo + hi) // 2
        got = _turn_render(job, k, mid, n_head)
        if len(got[0]) <= max_seq_len:
            best, hi = got, mid - 1
        else:
            lo = mid + 1
    if best is None:
        raise _TooLong
    stats.truncated_examples += 1
    stats.truncated_tokens += len(ids) - len(best[0])
    stats.truncated_supervised_tokens += _supervised(kinds) - _supervised(best[1])
    return best[0], best[1], True


class _TooLong(Exception):
    pass


def render_examples(
    messages: Sequence[Mapping[str, Any]],
    spans: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    max_seq_len: int,
    tools: Any = None,
    example_id: str | None = None,
    mode: Mode = "span",
    syntax: Syntax = "native",
) -> RenderResult:
    """Render one canonical trajectory into its training examples (see the module docstring).

    ``syntax="native"`` passes structured tool calls to the chat template (`native`); where the template cannot
    take them, or does not show a trained turn whole even alone, the canonical text is rendered instead and
    counted in ``stats.native_fallback`` (``note`` says why). ``"hermes"`` always renders the canonical text.
    Raises RenderError when the spans are invalid or the template cannot render the conversation.
    """
    if mode not in ("span", "flat"):
        raise ValueError(f"mode must be 'span' or 'flat', not {mode!r}")
    if syntax not in ("native", "hermes"):
        raise ValueError(f"syntax must be 'native' or 'hermes', not {syntax!r}")
    by_message = group_spans(messages, spans)

    def canonical(layout_messages: Sequence[Mapping[str, Any]]) -> Layout:
        return conversation_layout(layout_messages, tokenizer, tools)

    if syntax == "hermes" or not uses_native(messages) or not getattr(tokenizer, "chat_template", None):
        return _render(_Job(messages, by_message, tokenizer, tools, mode == "flat", canonical), max_seq_len,
                       example_id)
    support = native_support(tokenizer)
    note = support.reason
    if support.calls:
        def native(layout_messages: Sequence[Mapping[str, Any]], support: Support = support) -> Layout:
            return native_layout(layout_messages, tokenizer, tools, support)

        try:
            result = _render(_Job(messages, by_message, tokenizer, tools, mode == "flat", native, True),
                             max_seq_len, example_id)
        except RenderError as exc:
            note = f"the chat template refused the structured calls: {str(exc)[:160]}"
        else:
            if result.stats.unrendered_turns == 0:
                result.stats.native_rendered = 1
                return result
            note = "the chat template drops text of a turn with calls (e.g. free text next to a call)"
    result = _render(_Job(messages, by_message, tokenizer, tools, mode == "flat", canonical), max_seq_len,
                     example_id)
    result.stats.native_fallback = 1
    result.note = f"tool calls rendered in the canonical Hermes text, not natively: {note}"
    return result


def _render(job: _Job, max_seq_len: int, example_id: str | None) -> RenderResult:
    messages = job.messages
    wanted = [i for i, m in enumerate(messages) if _trains(m, job.by_message[i], job.flat)]
    result = RenderResult([])
    if not wanted:
        result.skipped = "no_supervised_tokens"
        return result
    stats = result.stats
    layout = job.layout(messages)
    whole = [i for i in wanted if layout.placed[i] is not None]
    split = [i for i in wanted if layout.placed[i] is None]
    stats.context_not_verbatim = sum(p is None for i, p in enumerate(layout.placed) if i not in wanted)
    outcomes: list[tuple[int | None, tuple[list[int], np.ndarray, bool] | None]] = []
    if whole:
        outcomes.append((None, _conversation_example(job, whole, layout, max_seq_len, stats)))
    for k in split:
        stats.split_turns += 1
        try:
            outcomes.append((k, _turn_example(job, k, max_seq_len, stats)))
        except RenderError:
            stats.unrendered_turns += 1
        except _TooLong:
            outcomes.append((k, None))
    too_long = False
    for turn, got in outcomes:
        if got is None:
            too_long = True
            continue
        ids, kinds, truncated = got
        if _supervised(kinds) == 0:
            continue
        ex_id = example_id if turn is None or example_id is None else f"{example_id}#{turn}"
        result.examples.append(RenderedExample(list(ids), kinds.tolist(), truncated, ex_id, turn))
    stats.examples = len(result.examples)
    if not result.examples:
        result.skipped = "too_long" if too_long else "no_supervised_tokens"
    return result


def render_trajectory(
    messages: Sequence[Mapping[str, Any]],
    spans: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    max_seq_len: int,
    tools: Any = None,
    example_id: str | None = None,
    mode: Mode = "span",
    syntax: Syntax = "native",
) -> RenderedExample | None:
    """The first example of `render_examples` (the whole conversation when the template shows it whole), or
    None when nothing is left to train. Raises RenderError like `render_examples`."""
    result = render_examples(messages, spans, tokenizer, max_seq_len=max_seq_len, tools=tools,
                             example_id=example_id, mode=mode, syntax=syntax)
    return result.examples[0] if result.examples else None


def collate(examples: Sequence[RenderedExample], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch: {"input_ids", "attention_mask", "kinds"}, each Long[B, T]; pad kind 0."""
    import torch

    width = max((len(e.input_ids) for e in examples), default=0)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    kinds = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        attention[row, :n] = 1
        kinds[row, :n] = torch.tensor(e.kinds, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "kinds": kinds}


__all__ = ["ACTION", "NONE", "PLAIN_TEMPLATE_DOC", "REASON", "RenderError", "RenderResult", "RenderStats",
           "RenderedExample", "Syntax", "collate", "render_examples", "render_trajectory"]
