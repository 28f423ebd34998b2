"""Choosing what of an over-long conversation to keep (DESIGN §5: "Sequences longer than `max_seq_len` drop
whole leading context or whole trailing steps, never cut inside a span, keeping the window with the most
supervised tokens").

A window keeps the leading system message(s), then messages ``first..last`` whole: ``last`` is a supervised
assistant turn, ``first`` any message after the system ones. Every window is scored from the full render
(tokens and supervised tokens per message block, by prefix sums), the most promising are rendered for real
(a template may add or move text when messages are dropped), and the first whose real render fits is kept:
most supervised tokens first, then the most leading context. At most `max_renders` renders are tried.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence

import numpy as np

Window = tuple[int, int]  # (first, last) message indices, inclusive


def best_window(
    n_head: int,
    supervised: Sequence[int],
    block_tokens: np.ndarray,
    block_supervised: np.ndarray,
    preamble: int,
    max_len: int,
    fits: Callable[[Window], bool],
    *,
    max_renders: int = 24,
) -> Window | None:
    """The kept window, or None when no tried window fits.

    `block_tokens[i]` / `block_supervised[i]` are the tokens / supervised tokens attributed to message i in
    the full render (its text, closing and the next header), `preamble` the tokens before the first message
    block; `fits(window)` renders the window for real and says whether it fits with a supervised token.
    """
    n = len(block_tokens)
    cum = np.concatenate([[0], np.cumsum(block_tokens)])
    cum_sup = np.concatenate([[0], np.cumsum(block_supervised)])
    ends = np.asarray(sorted(supervised), dtype=np.int64)
    fixed = preamble + int(cum[n_head])
    heap: list[tuple[int, int, int, int]] = []  # (-estimated supervised, first, -last, position in ends)

    def push(first: int, hi: int) -> None:
        """Queue the longest window from `first` that the estimate fits, among ends[lo:hi]."""
        lo = int(np.searchsorted(ends, first))
        if hi <= lo:
            return
        room = max_len - fixed + int(cum[first])
        # largest j in [lo, hi) with cum[ends[j] + 1] <= room; windows past the estimate are still tried last
        j = int(np.searchsorted(cum[ends[lo:hi] + 1], room, side="right")) - 1 + lo
        j = max(j, lo)
        last = int(ends[j])
        heapq.heappush(heap, (-int(cum_sup[last + 1] - cum_sup[first]), first, -last, j))

    for first in range(n_head, n):
        push(first, len(ends))
    renders = 0
    while heap and renders < max_renders:
        _, first, neg_last, j = heapq.heappop(heap)
        renders += 1
        if fits((first, -neg_last)):
            return first, -neg_last
        push(first, j)  # the same start with fewer trailing steps
    return None
