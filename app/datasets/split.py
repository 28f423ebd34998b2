"""The deterministic train/eval split, the same in Python and in SQL.

A trajectory goes to ``eval`` when ``h / 2**256 < eval_fraction``, with ``h`` the SHA-256 of the
UTF-8 string ``f"{seed}:{trajectory_id}"`` (the id in its canonical lowercase hyphenated form) read
as a big-endian integer; otherwise to ``train``. The comparison is exact: ``h < ceil(eval_fraction
* 2**256)``, and Postgres compares the digest with that threshold as two ``bit(256)`` strings (equal
lengths compare like unsigned integers). So a seed gives the same split on every run and machine,
independently of which other trajectories are selected, and each id lands in eval with probability
``eval_fraction``.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from fractions import Fraction

SQL_IS_EVAL = (
    "('x' || encode(sha256(convert_to(CAST(:seed AS bigint)::text || ':' || t.id::text, 'UTF8')), 'hex'))"
    "::bit(256) < ('x' || :threshold)::bit(256)"
)
"""A boolean SQL expression over ``trajectories t``; bind ``seed`` and ``threshold`` (``threshold_hex``)."""


def threshold(eval_fraction: float) -> int:
    """The smallest integer ``T`` such that ``h < T`` exactly when ``h / 2**256 < eval_fraction``."""
    if not 0 <= eval_fraction <= 0.5:  # the API's range; keeps T within 256 bits
        raise ValueError(f"eval_fraction must be in [0, 0.5], got {eval_fraction}")
    return math.ceil(Fraction(eval_fraction) * 2**256)


def threshold_hex(eval_fraction: float) -> str:
    """``threshold`` as 64 hex digits (the SQL side's ``:threshold``)."""
    return f"{threshold(eval_fraction):064x}"


def split_of(trajectory_id: uuid.UUID | str, seed: int, eval_fraction: float) -> str:
    """``"eval"`` or ``"train"`` for one trajectory: the Python twin of ``SQL_IS_EVAL``."""
    digest = hashlib.sha256(f"{seed}:{uuid.UUID(str(trajectory_id))}".encode()).digest()
    return "eval" if int.from_bytes(digest, "big") < threshold(eval_fraction) else "train"
