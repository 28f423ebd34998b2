"""Edit operations through POST …/spans/edits: each op, ordering of indexes, atomicity, errors."""

from __future__ import annotations

from tests.annotations.helpers import AUTO, PROBLEM, edit, ingest


def _spans(client, tid):  # type: ignore[no-untyped-def]
    return client.get(f"/v1/trajectories/{tid}/spans").json()["spans"]


def test_set_kind(client):
    tid = ingest(client, "e-kind")
    r = edit(client, tid, [{"op": "set_kind", "index": 3, "kind": "reason"}], reason="answer is prose")
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"' and r.json()["revision"] == 2 and r.json()["reason"] == "answer is prose"
    assert r.json()["spans"][3] == {"message": 4, "start": 0, "end": 18, "kind": "reason"}
    assert r.json()["spans"][:3] == AUTO[:3]


def test_move(client):
    tid = ingest(client, "e-move")
    r = edit(client, tid, [{"op": "move", "index": 0, "end": 20}, {"op": "move", "index": 3, "start": 6, "end": 17}])
    assert r.status_code == 200, r.text
    spans = r.json()["spans"]
    assert spans[0] == {"message": 2, "start": 0, "end": 20, "kind": "reason"}
    assert spans[3] == {"message": 4, "start": 6, "end": 17, "kind": "action"}


def test_split_and_indexes_follow_previous_ops(client):
    tid = ingest(client, "e-split")
    # split the answer "It is 21°C in NYC." at 6 into reason + action; then index 4 is the right part
    r = edit(client, tid, [{"op": "split", "index": 3, "at": 6},
                           {"op": "set_kind", "index": 4, "kind": "reason"}])
    assert r.status_code == 200, r.text
    assert r.json()["spans"][3:] == [{"message": 4, "start": 0, "end": 6, "kind": "action"},
                                     {"message": 4, "start": 6, "end": 18, "kind": "reason"}]
    r = edit(client, tid, [{"op": "split", "index": 0, "at": 9, "kind_right": "action"}], etag='"2"')
    assert r.json()["spans"][:2] == [{"message": 2, "start": 0, "end": 9, "kind": "reason"},
                                     {"message": 2, "start": 9, "end": 21, "kind": "action"}]


def test_merge_adjacent_and_over_whitespace(client):
    tid = ingest(client, "e-merge")
    r = edit(client, tid, [{"op": "merge", "index": 0}])
    assert r.status_code == 200, r.text
    assert r.json()["spans"][0] == {"message": 2, "start": 0, "end": 99, "kind": "reason"}
    assert len(r.json()["spans"]) == 3
    # a gap of whitespace only ("It is" + " " + "21°C…") may be merged over; the merged kind can be set
    r = edit(client, tid, [{"op": "split", "index": 2, "at": 5}, {"op": "move", "index": 3, "start": 6},
                           {"op": "merge", "index": 2, "kind": "reason"}], etag='"2"')
    assert r.status_code == 200, r.text
    assert r.json()["spans"][2] == {"message": 4, "start": 0, "end": 18, "kind": "reason"}


def test_delete_and_add(client):
    tid = ingest(client, "e-add")
    r = edit(client, tid, [{"op": "delete", "index": 2},
                           {"op": "add", "message": 1, "start": 0, "end": 15, "kind": "observation"}])
    assert r.status_code == 200, r.text
    spans = r.json()["spans"]
    # the added span is sorted into place (message 1 comes first)
    assert spans[0] == {"message": 1, "start": 0, "end": 15, "kind": "observation"}
    assert spans[1:] == [AUTO[0], AUTO[1], AUTO[3]]


def _error(r):  # type: ignore[no-untyped-def]
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    return r.json()


def test_impossible_op_names_its_index_and_changes_nothing(client):
    tid = ingest(client, "e-bad")
    ok = {"op": "set_kind", "index": 0, "kind": "action"}
    cases = [
        ({"op": "delete", "index": 4}, "ops[1].index", "index_out_of_range"),
        ({"op": "split", "index": 3, "at": 18}, "ops[1].at", "split_outside_span"),
        ({"op": "merge", "index": 1}, "ops[1]", "merge_across_messages"),
        ({"op": "merge", "index": 3}, "ops[1].index", "no_next_span"),
        ({"op": "move", "index": 2}, "ops[1]", "nothing_to_move"),
        ({"op": "move", "index": 2, "end": 40}, "ops[1].end", "end_out_of_range"),
        ({"op": "move", "index": 2, "start": 14}, "ops[1].end", "empty_span"),
        ({"op": "set_kind", "index": 2, "kind": "reason"}, "ops[1].kind", "kind_not_allowed"),
        ({"op": "add", "message": 9, "start": 0, "end": 1, "kind": "reason"}, "ops[1].message",
         "message_out_of_range"),
        ({"op": "add", "message": 0, "start": 0, "end": 3, "kind": "reason"}, "ops[1].kind", "kind_not_allowed"),
    ]
    for op, field, code in cases:
        body = _error(edit(client, tid, [ok, op]))
        assert body["code"] == "invalid_edit", body
        assert body["errors"][0]["field"] == field and body["errors"][0]["code"] == code, (op, body)
        assert "ops[1]" in body["errors"][0]["message"]
    assert _spans(client, tid) == AUTO  # the valid first op was not applied either


def test_merge_over_text_is_refused(client):
    tid = ingest(client, "e-merge-text")
    body = _error(edit(client, tid, [{"op": "move", "index": 0, "end": 10}, {"op": "merge", "index": 0}]))
    assert body["errors"][0]["field"] == "ops[1]" and body["errors"][0]["code"] == "merge_over_text"


def test_result_validated_as_a_whole(client):
    tid = ingest(client, "e-overlap")
    # growing the reason span into the action span leaves an overlap in the result
    body = _error(edit(client, tid, [{"op": "set_kind", "index": 3, "kind": "reason"},
                                     {"op": "move", "index": 0, "end": 30}]))
    assert body["code"] == "invalid_spans"
    assert body["errors"][0]["field"] == "spans[1]" and body["errors"][0]["code"] == "overlap"
    assert body["errors"][0]["op"] == "ops[1]"  # spans[1] is untouched: the op that grew spans[0] is named
    # an intermediate overlap is fine when a later op resolves it
    r = edit(client, tid, [{"op": "move", "index": 0, "end": 30}, {"op": "move", "index": 1, "start": 30}])
    assert r.status_code == 200, r.text
    assert r.json()["spans"][:2] == [{"message": 2, "start": 0, "end": 30, "kind": "reason"},
                                     {"message": 2, "start": 30, "end": 99, "kind": "action"}]


def test_overlap_error_names_the_op_that_caused_it(client):
    tid = ingest(client, "e-overlap-op")
    body = _error(edit(client, tid, [{"op": "add", "message": 2, "start": 5, "end": 8, "kind": "action"}]))
    assert body["errors"][0]["field"] == "spans[1]" and body["errors"][0]["op"] == "ops[0]"


def test_edits_need_if_match_and_fresh_revision(client):
    tid = ingest(client, "e-etag")
    op = [{"op": "delete", "index": 0}]
    r = edit(client, tid, op, etag=None)
    assert r.status_code == 428 and r.json()["code"] == "precondition_required"
    assert edit(client, tid, op).status_code == 200
    r = edit(client, tid, op, etag='"1"')
    assert r.status_code == 412 and r.json()["current_revision"] == 2


def test_op_schema_errors(client):
    tid = ingest(client, "e-schema")
    r = edit(client, tid, [{"op": "explode", "index": 0}])
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("ops[0]")
    r = edit(client, tid, [{"op": "set_kind", "index": 0, "kind": "chat"}])
    assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("ops[0]")
    r = edit(client, tid, [])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "ops"
