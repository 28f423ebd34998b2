"""Snapshots never change: not on span edits, review changes or (forced) trajectory deletions.
Deleting a held trajectory needs ``force``; deleting a dataset a job names is refused. Listings
page with keyset cursors."""

from __future__ import annotations

from typing import Any

from tests.annotations.helpers import AUTO, keyed_client, put_spans
from tests.datasets.helpers import PROBLEM, create, ingest_approved, sql


def _view(client: Any, dataset_id: str) -> tuple[dict[str, Any], list[dict[str, Any]], bytes]:
    """Everything a snapshot shows: its row, its items, its export."""
    ds = client.get(f"/v1/datasets/{dataset_id}").json()
    items = client.get(f"/v1/datasets/{dataset_id}/items").json()["items"]
    export = client.get(f"/v1/datasets/{dataset_id}/export").content
    return ds, items, export


def test_span_edits_and_review_changes_leave_snapshots_alone(client):
    a = ingest_approved(client, "a")
    b = ingest_approved(client, "b")
    ds = create(client, "before").json()
    before = _view(client, ds["id"])

    assert client.post(f"/v1/trajectories/{a}/review", json={"action": "reopen"}).json()["status"] == "in_review"
    edited = [s for s in AUTO if s["kind"] != "observation"]
    r = put_spans(client, a, edited, '"1"')
    assert r.status_code == 200 and r.json()["revision"] == 2
    assert client.post(f"/v1/trajectories/{b}/review", json={"action": "reopen"}).status_code == 200
    client.post(f"/v1/trajectories/{b}/review", json={"action": "reject"})

    assert _view(client, ds["id"]) == before
    ds_row, items, export = before
    assert [i["span_revision"] for i in items] == [1, 1]
    assert b'"kind":"observation"' in export.split(b"\n")[0]  # the pinned revision 1 still has it

    client.post(f"/v1/trajectories/{a}/review", json={"action": "approve"})
    later = create(client, "after").json()
    assert later["counts"]["items"] == 1  # b is rejected now
    item = client.get(f"/v1/datasets/{later['id']}/items").json()["items"][0]
    assert (item["trajectory_id"], item["span_revision"]) == (a, 2)
    assert later["stats"]["spans"]["observation"]["count"] == 0
    assert later["content_sha256"] != ds_row["content_sha256"]


def test_deleting_a_held_trajectory_needs_force_and_leaves_a_tombstone(app, client):
    a = ingest_approved(client, "a")
    b = ingest_approved(client, "b")
    first = create(client, "first").json()
    second = create(client, "second", filter={"source": "support-agent"}).json()
    before = _view(client, first["id"])

    r = client.delete(f"/v1/trajectories/{a}")
    assert r.status_code == 409 and r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["code"] == "trajectory_in_dataset" and "first" in body["detail"] and "second" in body["detail"]
    held = [{"id": first["id"], "name": "first"}, {"id": second["id"], "name": "second"}]
    assert body["datasets"] == sorted(held, key=lambda d: d["id"])  # created in one transaction: id order
    assert client.get(f"/v1/trajectories/{a}").status_code == 200

    curator = keyed_client(app, client, ["curate"], "curator")
    assert curator.delete(f"/v1/trajectories/{a}?force=true").json()["code"] == "missing_scope"

    assert client.delete(f"/v1/trajectories/{a}?force=true").status_code == 204
    assert client.get(f"/v1/trajectories/{a}").status_code == 404
    stones = sql(app, "SELECT dataset_id::text AS d, deleted_by, deleted_at FROM dataset_tombstones"
                      " WHERE trajectory_id = :t ORDER BY 1", t=a)
    assert sorted(s.d for s in stones) == sorted([first["id"], second["id"]])
    assert all(s.deleted_by == "bootstrap-admin" and s.deleted_at is not None for s in stones)

    ds, items, export = _view(client, first["id"])
    old_ds, old_items, old_export = before
    assert export == old_export  # the pinned content survives the trajectory
    assert ds == {**old_ds, "n_deleted_trajectories": 1}
    assert items == [{**i, "trajectory_deleted": i["trajectory_id"] == a} for i in old_items]
    assert client.delete(f"/v1/trajectories/{a}?force=true").status_code == 404

    # a trajectory no dataset holds is deleted without force
    lone = ingest_approved(client, "lone")
    assert client.delete(f"/v1/trajectories/{lone}").status_code == 204
    assert client.get(f"/v1/datasets/{first['id']}").json()["counts"]["items"] == 2
    assert b in {i["trajectory_id"] for i in items}


def test_deleting_a_dataset_is_refused_while_a_job_names_it(app, client):
    tid = ingest_approved(client, "a")
    ds = create(client, "used").json()
    other = create(client, "other").json()
    job = sql(app, "INSERT INTO jobs (kind, id, dataset_id) VALUES ('distill', gen_random_uuid(), :d)"
                   " RETURNING id::text AS id", d=ds["id"])[0].id
    sql(app, "INSERT INTO jobs (kind, id, config) VALUES ('distill', gen_random_uuid(),"
             " jsonb_build_object('dataset_id', CAST(:d AS text)))", d=other["id"])

    curator = keyed_client(app, client, ["curate"], "curator")
    assert curator.delete(f"/v1/datasets/{ds['id']}").status_code == 403
    r = client.delete(f"/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and r.json()["code"] == "dataset_in_use" and r.json()["jobs"] == [job]
    assert client.delete(f"/v1/datasets/{other['id']}").status_code == 409

    sql(app, "DELETE FROM jobs WHERE id = :j", j=job)
    client.delete(f"/v1/trajectories/{tid}?force=true")
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert client.get(f"/v1/datasets/{ds['id']}/items").status_code == 404
    assert client.get(f"/v1/datasets/{ds['id']}/export").status_code == 404
    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 404
    left = sql(app, "SELECT (SELECT count(*) FROM dataset_items WHERE dataset_id = :d) AS i,"
                    " (SELECT count(*) FROM dataset_tombstones WHERE dataset_id = :d) AS t", d=ds["id"])[0]
    assert tuple(left) == (0, 0)


def test_list_and_items_page_with_cursors(app, client):
    tid = ingest_approved(client, "a")
    for i in range(4):
        ingest_approved(client, f"more-{i}")
    created = [create(client, f"ds-{i}").json()["id"] for i in range(5)]  # same created_at: ties on id

    seen: list[str] = []
    cursor = None
    while True:
        page = client.get("/v1/datasets", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["items"]) <= 2
        seen += [d["id"] for d in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(seen) == sorted(created) and len(seen) == 5
    assert seen == sorted(created, reverse=True)  # newest first, then id descending
    assert [d["id"] for d in client.get("/v1/datasets?name=ds-3").json()["items"]] == [created[3]]
    assert client.get("/v1/datasets?cursor=@@").json()["code"] == "invalid_cursor"
    assert client.get("/v1/datasets?limit=1001").status_code == 422

    positions: list[int] = []
    cursor = None
    while True:
        page = client.get(f"/v1/datasets/{created[0]}/items", params={"limit": 2, "cursor": cursor or ""}).json()
        positions += [i["position"] for i in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert positions == [0, 1, 2, 3, 4]
    assert tid in {i["trajectory_id"] for i in client.get(f"/v1/datasets/{created[0]}/items").json()["items"]}
    assert client.get(f"/v1/datasets/{created[0]}/items?cursor=x").json()["code"] == "invalid_cursor"
    assert client.get(f"/v1/datasets/{created[0]}/items?split=test").status_code == 422
