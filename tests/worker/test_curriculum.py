"""The curriculum sampler: deterministic orders, growing competence pool, exact resume."""

from __future__ import annotations

from itertools import chain

import pytest

from worker.training.curriculum import CurriculumSampler, competence

COMPLEXITIES = [0.9, 0.1, 0.5, 0.3, 0.7, 0.0, 1.0, 0.2, 0.6, 0.4]
IDS = [f"traj-{i}" for i in range(len(COMPLEXITIES))]


def _draw(sampler: CurriculumSampler, steps: int) -> list[list[int]]:
    return [sampler.next_batch() for _ in range(steps)]


@pytest.mark.parametrize("schedule", ["none", "sorted", "competence"])
def test_same_seed_same_batches_other_seed_differs(schedule: str) -> None:
    def make(seed: int) -> CurriculumSampler:
        return CurriculumSampler(
            COMPLEXITIES,
            schedule,
            seed=seed,
            batch_size=3,
            ids=IDS,
            competence_steps=10,  # type: ignore[arg-type]
        )

    assert _draw(make(1), 8) == _draw(make(1), 8)
    if schedule != "sorted":
        assert _draw(make(1), 8) != _draw(make(2), 8)


def test_none_is_a_permutation_per_epoch_and_epochs_differ() -> None:
    sampler = CurriculumSampler(COMPLEXITIES, "none", seed=0, batch_size=5)
    epoch0 = list(chain.from_iterable(_draw(sampler, 2)))
    epoch1 = list(chain.from_iterable(_draw(sampler, 2)))
    assert sorted(epoch0) == list(range(10)) and sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1


def test_sorted_goes_simple_to_complex_every_epoch_and_crosses_epochs() -> None:
    sampler = CurriculumSampler(COMPLEXITIES, "sorted", seed=0, batch_size=4, ids=IDS)
    flat = list(chain.from_iterable(_draw(sampler, 5)))  # 20 draws = 2 epochs, batches straddle the boundary
    easy = sorted(range(10), key=lambda i: COMPLEXITIES[i])
    assert flat == easy + easy
    assert sampler.epoch == 2 and sampler.position == 0


def test_sorted_ties_do_not_depend_on_input_order() -> None:
    comps = [0.5, 0.5, 0.5, 0.1]
    ids = ["a", "b", "c", "d"]
    perm = [2, 0, 3, 1]
    s1 = CurriculumSampler(comps, "sorted", seed=0, batch_size=4, ids=ids)
    s2 = CurriculumSampler([comps[p] for p in perm], "sorted", seed=0, batch_size=4, ids=[ids[p] for p in perm])
    order1 = [ids[i] for i in s1.next_batch()]
    order2 = [ids[perm[i]] for i in s2.next_batch()]
    assert order1 == order2 and order1[0] == "d"


def test_competence_pool_grows_and_starts_easy() -> None:
    comps = [i / 99 for i in range(100)]
    sampler = CurriculumSampler(comps, "competence", seed=0, batch_size=8, initial_competence=0.1, competence_steps=20)
    pools, maxima = [], []
    for _ in range(25):
        pools.append(sampler.pool_size())
        maxima.append(max(sampler.next_batch()))
    assert pools[0] == 10 and pools[-1] == 100
    assert pools == sorted(pools)
    assert all(m < pool for m, pool in zip(maxima, pools, strict=True))  # only eligible (easy) indices
    assert maxima[0] < 10 and max(maxima[-5:]) >= 50
    assert competence(0, 20, 0.1) == pytest.approx(0.1) and competence(20, 20, 0.1) == 1.0


def test_competence_small_pool_samples_with_replacement() -> None:
    sampler = CurriculumSampler([0.0, 1.0], "competence", seed=0, batch_size=4, initial_competence=0.1)
    assert sampler.next_batch() == [0, 0, 0, 0]


@pytest.mark.parametrize("schedule", ["none", "sorted", "competence"])
def test_state_round_trip_continues_identically(schedule: str) -> None:
    def make() -> CurriculumSampler:
        return CurriculumSampler(
            COMPLEXITIES,
            schedule,
            seed=7,
            batch_size=3,
            ids=IDS,
            competence_steps=6,  # type: ignore[arg-type]
        )

    straight = _draw(make(), 12)
    first = make()
    head = _draw(first, 5)
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    assert head + _draw(resumed, 7) == straight


def test_state_from_another_dataset_is_refused() -> None:
    state = CurriculumSampler(COMPLEXITIES, "none", seed=0, batch_size=2).state_dict()
    other = CurriculumSampler(COMPLEXITIES[:5], "none", seed=0, batch_size=2)
    with pytest.raises(ValueError, match="n="):
        other.load_state_dict(state)
