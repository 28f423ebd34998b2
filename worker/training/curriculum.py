"""Curriculum sampler: which training examples go into each global batch, reproducibly.

Three schedules over a dataset of N examples with normalised complexities (0 = simplest):

- `none`: a fresh seeded permutation every epoch;
- `sorted`: simple → complex within every epoch (ties broken by a stable hash of the example id, so the order
  does not depend on the order records arrived in);
- `competence` (Platanios et al., 2019): at step t only the easiest c(t)·N examples are eligible, with
  c(t) = min(1, sqrt(t·(1 − c0²)/T + c0²)); a batch is drawn uniformly (without replacement when the pool is
  large enough) from that pool.

Every random draw is a pure function of (seed, epoch) or (seed, step), so the whole state is three integers:
`state_dict()` / `load_state_dict()` make a resumed run draw exactly the batches the uninterrupted run would
have drawn. Under DDP every rank holds an identical sampler and takes its own slice of each global batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Schedule = Literal["none", "sorted", "competence"]


def _id_hash(example_id: str) -> int:
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big")


def competence(step: int, total: int, initial: float) -> float:
    """c(t) = min(1, sqrt(t·(1 − c0²)/T + c0²)) — the fraction of the easiest examples eligible at `step`."""
    if total <= 0:
        return 1.0
    return min(1.0, math.sqrt(step * (1.0 - initial**2) / total + initial**2))


class CurriculumSampler:
    """Draws global batches of example indices according to a curriculum schedule.

    `batch_size` is the GLOBAL batch (micro_batch × grad_accum × world_size). `competence_steps` is T of the
    competence schedule. `ids` (optional, one per example) only breaks complexity ties for `sorted` and
    `competence`; without them ties keep index order.
    """

    def __init__(
        self,
        complexities: Sequence[float],
        schedule: Schedule,
        *,
        seed: int,
        batch_size: int,
        ids: Sequence[str] | None = None,
        initial_competence: float = 0.1,
        competence_steps: int = 1000,
    ) -> None:
        if len(complexities) == 0:
            raise ValueError("the curriculum sampler needs at least one example")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if ids is not None and len(ids) != len(complexities):
            raise ValueError("ids and complexities must have the same length")
        self.n = len(complexities)
        self.schedule: Schedule = schedule
        self.seed = seed
        self.batch_size = batch_size
        self.initial_competence = initial_competence
        self.competence_steps = max(1, competence_steps)
        tie = [_id_hash(i) for i in ids] if ids is not None else list(range(self.n))
        # Easiest first; the tie key makes the order independent of input order when ids are given.
        self.easy_order: list[int] = sorted(range(self.n), key=lambda i: (float(complexities[i]), tie[i], i))
        self.step = 0  # batches drawn so far
        self.epoch = 0  # for none/sorted: current pass over the data
        self.position = 0  # for none/sorted: next index into the epoch order

    @property
    def steps_per_epoch(self) -> float:
        return self.n / self.batch_size

    def _epoch_order(self, epoch: int) -> list[int]:
        if self.schedule == "sorted":
            return self.easy_order
        rng = np.random.default_rng([self.seed, epoch])
        return [int(i) for i in rng.permutation(self.n)]

    def competence_now(self) -> float:
        if self.schedule != "competence":
            return 1.0
        return competence(self.step, self.competence_steps, self.initial_competence)

    def pool_size(self) -> int:
        """How many of the easiest examples are eligible for the next batch (N for non-competence)."""
        return max(1, math.ceil(self.competence_now() * self.n - 1e-9))

    def next_batch(self) -> list[int]:
        """Indices of the next global batch; advances the state."""
        if self.schedule == "competence":
            pool = self.easy_order[: self.pool_size()]
            rng = np.random.default_rng([self.seed, self.step])
            replace = len(pool) < self.batch_size
            picks = rng.choice(len(pool), size=self.batch_size, replace=replace)
            batch = [pool[int(p)] for p in picks]
        else:
            batch = []
            while len(batch) < self.batch_size:
                order = self._epoch_order(self.epoch)
                take = order[self.position : self.position + self.batch_size - len(batch)]
                batch.extend(take)
                self.position += len(take)
                if self.position >= self.n:
                    self.epoch += 1
                    self.position = 0
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "n": self.n,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("schedule", "n", "seed", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"sampler state is for {key}={state[key]!r}, this sampler has {getattr(self, key)!r}")
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
