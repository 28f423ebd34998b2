"""The "synthetic shop" problem family: small, seeded, multi-step tool-use problems.

Each problem asks for the cost of 1-3 kinds of fruit (or the change left from a budget). Solving it
takes one `lookup` per item (unit prices live in the fixed `PRICES` table that the `lookup` tool
serves) and then one `calculator` call that combines quantities and prices. Problems are generated
from a seeded RNG, so `generate_problems(n, seed, split)` always returns the same list. Train and
test are disjoint by construction: a problem's split is a stable hash of its content signature
(question kind, items with quantities, budget), and generation keeps only problems whose hash falls
in the requested split, so the two splits never share a problem while covering the same items and
number ranges. Prices are multiples of 0.25, so every answer is exact in binary floating point.
`max_items` caps the items per problem for easier variants (a 2-layer student learns max_items=2
from a few hundred runs in a few CPU minutes).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Literal

Split = Literal["train", "test"]

# Unit prices served by the `lookup` tool. Multiples of 0.25 keep float arithmetic exact.
PRICES: dict[str, float] = {
    "apple": 0.5,
    "banana": 0.25,
    "cherry": 3.0,
    "grape": 2.5,
    "lemon": 0.75,
    "lime": 0.25,
    "mango": 1.5,
    "melon": 4.0,
    "orange": 1.0,
    "peach": 1.25,
    "pear": 1.75,
    "plum": 0.5,
}
PLURALS: dict[str, str] = {
    "cherry": "cherries",
    "mango": "mangoes",
    "peach": "peaches",
}
BUDGETS: tuple[int, ...] = (10, 20, 50)
MAX_QUANTITY = 9
TEST_BUCKETS = 5  # one bucket in five of the signature hash is the test split


def format_number(x: float) -> str:
    """Canonical text of a number: integers without a point, others without trailing zeros."""
    if abs(x - round(x)) < 1e-9:
        return str(round(x))
    return f"{x:.6f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Step:
    """One tool call a solution needs: the tool's name and its JSON arguments."""

    tool: str
    arguments: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class Problem:
    """One task instance. `answer` is canonical text (see `format_number`); `steps` is the plan."""

    id: str
    question: str
    answer: str
    steps: tuple[Step, ...]
    split: Split
    kind: Literal["total", "change"]
    items: tuple[tuple[str, int], ...]  # (item, quantity), in question order
    budget: int | None = None

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @property
    def expression(self) -> str:
        """The calculator expression of the solution (the last step's argument)."""
        return str(self.steps[-1].arguments["expression"])


def _noun(item: str, qty: int) -> str:
    return item if qty == 1 else PLURALS.get(item, item + "s")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _expression(kind: str, items: tuple[tuple[str, int], ...], budget: int | None) -> str:
    total = "+".join(f"{qty}*{format_number(PRICES[item])}" for item, qty in items)
    if kind == "total":
        return total
    return f"{budget}-({total})" if len(items) > 1 else f"{budget}-{total}"


def _signature(kind: str, items: tuple[tuple[str, int], ...], budget: int | None) -> str:
    return f"{kind}|{','.join(f'{q}x{i}' for i, q in items)}|{budget}"


def split_of(signature: str) -> Split:
    """The split a problem signature belongs to (stable across runs and machines)."""
    h = int.from_bytes(hashlib.sha256(signature.encode()).digest()[:8], "big")
    return "test" if h % TEST_BUCKETS == 0 else "train"


def make_problem(
    kind: Literal["total", "change"], items: tuple[tuple[str, int], ...], budget: int | None = None
) -> Problem:
    """Build the problem for explicit parameters (its split follows from its signature)."""
    if not items or any(item not in PRICES or qty < 1 for item, qty in items):
        raise ValueError(f"bad items: {items!r}")
    if (kind == "change") != (budget is not None):
        raise ValueError("a budget is needed exactly for 'change' problems")
    listing = _join([f"{qty} {_noun(item, qty)}" for item, qty in items])
    total = sum(qty * PRICES[item] for item, qty in items)
    if kind == "total":
        question = f"What is the price of {listing}?"
        value = total
    else:
        assert budget is not None
        if budget < total:
            raise ValueError("budget below total")
        question = f"I pay {budget} for {listing}. What is my change?"
        value = budget - total
    steps = tuple(Step("lookup", {"item": item}) for item, _ in items)
    steps += (Step("calculator", {"expression": _expression(kind, items, budget)}),)
    signature = _signature(kind, items, budget)
    digest = hashlib.sha256(signature.encode()).hexdigest()[:12]
    return Problem(
        id=f"shop-{digest}",
        question=question,
        answer=format_number(value),
        steps=steps,
        split=split_of(signature),
        kind=kind,
        items=items,
        budget=budget,
    )


def _sample(rng: random.Random, max_items: int) -> Problem:
    n_items = rng.choice((1, 1, 2, 2, 3)[: 2 * max_items - 1])  # shorter problems a bit more often
    names = rng.sample(sorted(PRICES), n_items)
    items = tuple((name, rng.randint(1, MAX_QUANTITY)) for name in names)
    if rng.random() < 0.3:
        total = sum(q * PRICES[i] for i, q in items)
        budgets = [b for b in BUDGETS if b >= total]
        if budgets:
            return make_problem("change", items, rng.choice(budgets))
    return make_problem("total", items)


def generate_problems(n: int, seed: int = 0, split: Split = "train", *, max_items: int = 3) -> list[Problem]:
    """`n` distinct problems of `split`, the same list for the same (`n`, `seed`, `split`, `max_items`).

    A longer list with the same seed starts with the shorter one (prefix-stable). `max_items` (1-3)
    caps the number of items per problem: 1 gives the easiest variant (one lookup, one calculation),
    with room for about 340 train and 85 test problems.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if max_items not in (1, 2, 3):
        raise ValueError(f"max_items must be 1, 2 or 3, not {max_items!r}")
    rng = random.Random(f"synthetic-shop:{seed}:{split}")
    seen: set[str] = set()
    out: list[Problem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * (n + 10):
            raise ValueError(f"cannot draw {n} distinct {split} problems")
        problem = _sample(rng, max_items)
        if problem.split == split and problem.id not in seen:
            seen.add(problem.id)
            out.append(problem)
    return out
