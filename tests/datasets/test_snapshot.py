"""Snapshot creation: what is selected (statuses, every filter, dedupe, max_per_task), the stored
statistics and content hash checked by hand, the empty-selection error, request validation."""

from __future__ import annotations

from typing import Any

from app.datasets.split import split_of
from contract.spans import span_kind_chars
from tests.app.payloads import REACT
from tests.datasets.helpers import PROBLEM, create, ingest, ingest_approved, sha256, sql


def _ids(client: Any, dataset_id: str) -> list[str]:
    return [i["trajectory_id"] for i in client.get(f"/v1/datasets/{dataset_id}/items?limit=1000").json()["items"]]


def _selected(client: Any, **body: Any) -> set[str]:
    r = create(client, **body)
    assert r.status_code == 201, r.text
    return set(_ids(client, r.json()["id"]))


def test_snapshot_stats_and_hash_by_hand(app, client):
    a = ingest_approved(client, "a")
    b = ingest_approved(client, "b", source="other-agent", task_type=None, outcome="failure", reward=0.0)
    c = ingest_approved(client, "c", messages=[
        {"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}], tools=None)
    ingest(client, "pending-one")  # not approved: not taken by default
    for tid, score, minute in ((a, 1.0, 1), (b, 5.5, 2), (c, 2.0, 3)):
        sql(app, "UPDATE trajectories SET complexity_score = :s, created_at = now() + make_interval(mins => :m)"
                 " WHERE id = :id", s=score, m=minute, id=tid)

    r = create(client, "hand", description="checked by hand", eval_fraction=0.5, seed=3)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/datasets/{r.json()['id']}"
    ds = r.json()
    assert ds["name"] == "hand" and ds["description"] == "checked by hand" and ds["created_by"] == "bootstrap-admin"
    assert (ds["statuses"], ds["eval_fraction"], ds["seed"], ds["filter"]) == (["approved"], 0.5, 3, {})

    trajectories = {t: client.get(f"/v1/trajectories/{t}").json() for t in (a, b, c)}
    splits = {t: split_of(t, 3, 0.5) for t in (a, b, c)}
    n_eval = sum(s == "eval" for s in splits.values())
    assert ds["counts"] == {"items": 3, "train": 3 - n_eval, "eval": n_eval}

    items = client.get(f"/v1/datasets/{ds['id']}/items").json()["items"]
    assert [i["trajectory_id"] for i in items] == [a, b, c]  # created_at order
    assert [i["position"] for i in items] == [0, 1, 2]
    assert [i["split"] for i in items] == [splits[a], splits[b], splits[c]]
    assert [i["complexity_score"] for i in items] == [1.0, 5.5, 2.0]
    assert [i["complexity"] for i in items] == [0.0, 1.0, 1.0 / 4.5]
    assert all(i["span_revision"] == 1 and not i["trajectory_deleted"] for i in items)

    lines = sorted(f"{t}\t1\t{trajectories[t]['content_sha256']}\t{splits[t]}\n" for t in (a, b, c))
    assert ds["content_sha256"] == sha256("".join(lines))

    stats = ds["stats"]
    chars = {k: 0 for k in ("reason", "action", "observation")}
    counts = dict(chars)
    for t in trajectories.values():
        for kind, n in span_kind_chars(t["messages"], t["spans"]).items():
            chars[kind] += n
        for span in t["spans"]:
            counts[span["kind"]] += 1
    assert stats["spans"] == {k: {"count": counts[k], "chars": chars[k]} for k in chars}
    assert stats["spans"]["action"]["count"] == 5 and stats["spans"]["observation"]["count"] == 2
    assert stats["n_items"] == 3 and stats["n_messages"] == 5 + 5 + 2
    assert (stats["n_candidates"], stats["n_dropped_duplicates"], stats["n_capped"]) == (3, 0, 0)
    assert stats["by_split"] == {"train": 3 - n_eval, "eval": n_eval}
    assert stats["by_source"] == {"support-agent": 2, "other-agent": 1}
    assert stats["by_task_type"] == {"weather": 2, "(none)": 1}
    assert stats["by_outcome"] == {"success": 2, "failure": 1}
    complexity = stats["complexity"]
    assert (complexity["min"], complexity["max"], complexity["mean"]) == (1.0, 5.5, 8.5 / 3)
    # width 0.45: 1.0 → bin 0, 2.0 → bin 2 (2.22), 5.5 → the last bin
    assert complexity["histogram"]["counts"] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert complexity["histogram"]["edges"][0] == 1.0 and complexity["histogram"]["edges"][-1] == 5.5
    assert len(complexity["histogram"]["edges"]) == 11

    assert client.get(f"/v1/datasets/{ds['id']}").json() == {**ds, "n_deleted_trajectories": 0}


def test_statuses_default_to_approved_only(client):
    approved = ingest_approved(client, "ok")
    pending = ingest(client, "p")
    rejected = ingest(client, "r")
    client.post(f"/v1/trajectories/{rejected}/review", json={"action": "reject"})
    assert _selected(client) == {approved}
    assert _selected(client, statuses=["pending", "rejected"]) == {pending, rejected}
    assert _selected(client, statuses=["approved", "pending", "approved"]) == {approved, pending}


def test_each_filter(app, client):
    base = ingest_approved(client, "base")  # support-agent, gpt-4o, weather, success, reward 1.0, prod+weather
    other_source = ingest_approved(client, "src", source="batch-agent")
    other_teacher = ingest_approved(client, "teach", teacher_model="claude")
    other_type = ingest_approved(client, "type", task_type="math")
    failed = ingest_approved(client, "fail", outcome="failure", reward=0.2)
    no_reward = ingest_approved(client, "noreward", reward=None, tags=["prod"])
    react_tid = client.post("/v1/trajectories", json=REACT).json()["id"]
    client.post(f"/v1/trajectories/{react_tid}/review", json={"action": "approve"})
    everyone = {base, other_source, other_teacher, other_type, failed, no_reward, react_tid}
    for i, tid in enumerate(sorted(everyone)):
        sql(app, "UPDATE trajectories SET complexity_score = :s, created_at = '2026-01-01'::timestamptz"
                 " + make_interval(days => :d) WHERE id = :id", s=float(i), d=i, id=tid)
    by_order = sorted(everyone)

    assert _selected(client) == everyone
    assert _selected(client, filter={"source": "batch-agent"}) == {other_source}
    assert _selected(client, filter={"teacher_model": "claude"}) == {other_teacher}
    assert _selected(client, filter={"task_type": "math"}) == {other_type}
    assert _selected(client, filter={"outcome": "failure"}) == {failed}
    assert _selected(client, filter={"format": "react"}) == {react_tid}
    rewarded = everyone - {no_reward, react_tid}  # a reward bound leaves unrewarded runs out
    assert _selected(client, filter={"reward_min": 0.5}) == rewarded - {failed}
    assert _selected(client, filter={"reward_max": 0.5}) == {failed}
    assert _selected(client, filter={"reward_min": 0.2, "reward_max": 0.2}) == {failed}
    assert _selected(client, filter={"tags": ["prod"]}) == everyone - {react_tid}
    assert _selected(client, filter={"tags": ["prod", "weather"]}) == everyone - {react_tid, no_reward}
    assert _selected(client, filter={"complexity_min": 2, "complexity_max": 4}) == set(by_order[2:5])
    assert _selected(client, filter={"complexity_max": 0}) == {by_order[0]}
    assert _selected(client, filter={"created_after": "2026-01-03T00:00:00Z"}) == set(by_order[2:])
    assert _selected(client, filter={"created_before": "2026-01-03T00:00:00Z"}) == set(by_order[:2])
    assert _selected(client, filter={"source": "support-agent", "outcome": "success",
                                     "complexity_min": 1}) == everyone - {other_source, failed, react_tid, by_order[0]}
    r = create(client, filter={"source": "support-agent", "reward_min": 0.5})
    assert r.json()["filter"] == {"source": "support-agent", "reward_min": 0.5}


def test_dedupe_keeps_the_oldest_and_max_per_task_keeps_the_first(app, client):
    def chat(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}, {"role": "assistant", "content": f"Done: {text}"}]

    first = ingest_approved(client, "dup-1", task="A")
    second = ingest_approved(client, "dup-2", task="A")  # same messages: same content_sha256
    third = ingest_approved(client, "a-3", task="A", messages=chat("third"))
    b = ingest_approved(client, "b", task="B", messages=chat("b"))
    untasked = [ingest_approved(client, f"none-{i}", task=None, messages=chat(f"none {i}")) for i in range(3)]
    order = [second, first, third, b, *untasked]  # second is the oldest
    for i, tid in enumerate(order):
        sql(app, "UPDATE trajectories SET created_at = now() + make_interval(secs => :s) WHERE id = :id", s=i, id=tid)
    hashes = {t: client.get(f"/v1/trajectories/{t}").json()["content_sha256"] for t in order}
    assert hashes[first] == hashes[second] and len(set(hashes.values())) == len(order) - 1

    everything = set(order)
    assert _selected(client) == everything
    r = create(client, dedupe=True)
    assert set(_ids(client, r.json()["id"])) == everything - {first}
    assert (r.json()["stats"]["n_dropped_duplicates"], r.json()["stats"]["n_capped"]) == (1, 0)

    r = create(client, max_per_task=1)  # per task text: A keeps its oldest; untasked runs are not capped
    assert set(_ids(client, r.json()["id"])) == {second, b, *untasked}
    assert (r.json()["stats"]["n_dropped_duplicates"], r.json()["stats"]["n_capped"]) == (0, 2)

    r = create(client, dedupe=True, max_per_task=2)  # dedupe first, then the cap on what is left
    assert set(_ids(client, r.json()["id"])) == {second, third, b, *untasked}
    stats = r.json()["stats"]
    assert (stats["n_candidates"], stats["n_dropped_duplicates"], stats["n_capped"], stats["n_items"]) == (7, 1, 0, 6)
    r = create(client, dedupe=True, max_per_task=1)
    assert (r.json()["stats"]["n_dropped_duplicates"], r.json()["stats"]["n_capped"]) == (1, 1)
    assert r.json()["counts"]["items"] == 5


def test_empty_selection_is_422_and_stores_nothing(app, client):
    ingest(client, "pending-only")
    before = sql(app, "SELECT (SELECT count(*) FROM datasets) AS d, (SELECT count(*) FROM dataset_items) AS i")[0]
    for body in ({}, {"filter": {"source": "nobody"}}, {"statuses": ["rejected"]}):
        r = create(client, **body)
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["code"] == "empty_dataset" and "selects no trajectories" in r.json()["detail"]
    assert r.json()["statuses"] == ["rejected"]
    after = sql(app, "SELECT (SELECT count(*) FROM datasets) AS d, (SELECT count(*) FROM dataset_items) AS i")[0]
    assert tuple(after) == tuple(before) == (0, 0)
    assert client.get("/v1/datasets").json()["items"] == []


def test_invalid_requests_are_422_naming_the_field(client):
    ingest_approved(client, "x")
    cases = [
        ({"eval_fraction": 0.6}, "eval_fraction"),
        ({"eval_fraction": -0.1}, "eval_fraction"),
        ({"statuses": []}, "statuses"),
        ({"statuses": ["done"]}, "statuses[0]"),
        ({"filter": {"reward_min": 2, "reward_max": 1}}, "filter"),
        ({"filter": {"complexity_min": 2, "complexity_max": 1}}, "filter"),
        ({"filter": {"colour": "red"}}, "filter.colour"),
        ({"filter": {"outcome": "great"}}, "filter.outcome"),
        ({"max_per_task": 0}, "max_per_task"),
        ({"name": ""}, "name"),
    ]
    for body, field in cases:
        r = create(client, **body) if "name" not in body else client.post("/v1/datasets", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["code"] == "validation_error"
        assert field in [e["field"] for e in r.json()["errors"]], (body, r.json()["errors"])
    assert client.post("/v1/datasets", json={"filter": {}}).status_code == 422  # name is required
