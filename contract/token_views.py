"""The token views a distill job writes for the web page's training view: for the first trajectories of
its dataset, the student's tokens as training renders them and the kind each token gets.

The worker writes ``token_views.jsonl`` in the run directory (``worker.training.views``) and the API
serves one trajectory's lines (``GET /v1/jobs/{id}/token-views/{trajectory_id}``); this module is the
one definition of the file's name, its caps and its line shape, which both sides import.

One line per rendered example (a trajectory whose template rewrites history has several)::

    {"trajectory_id": "…", "example": 0, "turn": null, "truncated": false,
     "tokens": ["<|im_start|>", "assistant", …], "kinds": "ccrrra…", "eot": [17, 42]}

``kinds`` holds one letter per token (``KIND_LETTERS``): what training does with it. ``r`` and ``a`` are
trained; ``o`` is an observation span's token (never trained, shown so an annotator sees where tool
output went); ``c`` is context. ``eot`` lists the end-of-turn tokens (specials after an assistant turn,
trained as action so the student learns to stop). ``trajectory_id`` comes first in every line, so a reader
can skip other trajectories' lines without parsing them.
"""

from __future__ import annotations

from typing import TypedDict

TOKEN_VIEWS = "token_views.jsonl"
MAX_TRAJECTORIES = 200  # the first trajectories of the dataset (train split first, then eval)
MAX_TOKENS = 4096  # per example; longer examples are cut (``truncated`` says so)
KIND_LETTERS = {"context": "c", "reason": "r", "action": "a", "observation": "o"}


class TokenView(TypedDict):
    trajectory_id: str
    example: int
    turn: int | None
    truncated: bool
    tokens: list[str]
    kinds: str
    eot: list[int]


def line_prefix(trajectory_id: str) -> str:
    """How a line of ``trajectory_id`` begins (the writer puts the id first, in this exact form)."""
    return '{"trajectory_id": "' + trajectory_id + '"'
