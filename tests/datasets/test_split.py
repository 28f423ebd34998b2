"""The seeded train/eval split: SQL and Python agree, the same seed gives the same split, another seed
another one, and the eval share follows eval_fraction."""

from __future__ import annotations

import hashlib
import math
import uuid
from fractions import Fraction

import pytest

from app.datasets.split import split_of, threshold
from tests.datasets.helpers import clone, create, ingest_approved


def _splits(client, dataset_id: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out: dict[str, str] = {}
    cursor = None
    while True:
        page = client.get(f"/v1/datasets/{dataset_id}/items", params={"limit": 1000, "cursor": cursor}).json()
        out.update({i["trajectory_id"]: i["split"] for i in page["items"]})
        if not (cursor := page["next_cursor"]):
            return out


def test_split_of_is_the_documented_formula():
    for i in range(200):
        tid = uuid.UUID(int=i * 7919 + 1)
        h = int(hashlib.sha256(f"5:{tid}".encode()).hexdigest(), 16)
        assert split_of(tid, 5, 0.25) == ("eval" if Fraction(h, 2**256) < Fraction(0.25) else "train")
    assert threshold(0.5) == 2**255 and threshold(0) == 0
    assert threshold(0.1) == math.ceil(Fraction(0.1) * 2**256)
    with pytest.raises(ValueError):
        threshold(0.75)


def test_same_seed_same_split_other_seed_other_split_and_fraction(app, client):
    tid = ingest_approved(client, "seed")
    clone(app, tid, 499)

    first = create(client, "s7", seed=7, eval_fraction=0.2).json()
    again = create(client, "s7-again", seed=7, eval_fraction=0.2).json()
    other = create(client, "s8", seed=8, eval_fraction=0.2).json()
    a, b, c = (_splits(client, d["id"]) for d in (first, again, other))
    assert len(a) == 500 and a == b and first["content_sha256"] == again["content_sha256"]
    assert a != c and first["content_sha256"] != other["content_sha256"]
    # the SQL split is the Python formula, id by id
    assert a == {t: split_of(t, 7, 0.2) for t in a} and c == {t: split_of(t, 8, 0.2) for t in c}
    n_eval = sum(s == "eval" for s in a.values())
    assert first["counts"]["eval"] == n_eval == first["stats"]["by_split"]["eval"]
    assert 60 <= n_eval <= 140  # 100 expected, sd ≈ 9

    half = sum(s == "eval" for s in _splits(client, create(client, "half", eval_fraction=0.5).json()["id"]).values())
    assert 190 <= half <= 310
    none = create(client, "none", eval_fraction=0).json()
    assert none["counts"] == {"items": 500, "train": 500, "eval": 0}
    # an item's split does not depend on what else is selected
    narrow = create(client, "narrow", seed=7, eval_fraction=0.2, filter={"complexity_max": 1e9}, max_per_task=1)
    assert all(a[t] == s for t, s in _splits(client, narrow.json()["id"]).items())

    evals = client.get(f"/v1/datasets/{first['id']}/items", params={"split": "eval", "limit": 1000}).json()
    assert {i["trajectory_id"] for i in evals["items"]} == {t for t, s in a.items() if s == "eval"}
