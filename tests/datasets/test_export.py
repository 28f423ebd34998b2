"""Export: the jsonl record shape, the OpenAI / TRL chat shape (checked against a small schema), split
selection, and streaming 20k items in constant memory."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from typing import Any

from sqlalchemy import text

from app.datasets.export import iter_export
from tests.annotations.helpers import AUTO, put_spans
from tests.app.payloads import REACT
from tests.datasets.helpers import approve, clone, create, ingest, ingest_approved
from tests.datasets.openai_validator import openai_line_errors

RECORD_KEYS = {"id", "messages", "spans", "tools", "complexity", "split", "source", "task_type", "outcome", "reward",
               "teacher_model", "span_revision"}


def _lines(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


def check_openai_example(example: dict[str, Any]) -> None:
    """The chat fine-tuning shape OpenAI accepts (and TRL's SFTTrainer reads)."""
    assert openai_line_errors(example) == [], example


def test_jsonl_records_are_the_contract_shape_with_metadata(app, client):
    tid = ingest_approved(client, "a", reward=0.5)
    stored = client.get(f"/v1/trajectories/{tid}").json()
    ds = create(client, eval_fraction=0).json()
    [record] = _lines(client.get(f"/v1/datasets/{ds['id']}/export"))
    assert set(record) == RECORD_KEYS
    assert record["id"] == tid and record["messages"] == stored["messages"] and record["spans"] == stored["spans"]
    assert record["spans"] == AUTO and list(record["spans"][0]) == ["message", "start", "end", "kind"]
    assert record["tools"] == stored["tools"] and record["split"] == "train" and record["complexity"] == 0.0
    assert (record["source"], record["task_type"], record["outcome"], record["reward"], record["teacher_model"],
            record["span_revision"]) == ("support-agent", "weather", "success", 0.5, "gpt-4o", 1)
    assert record["messages"][2]["tool_calls"] == [{"id": "call_1", "name": "get_weather",
                                                    "arguments": {"city": "NYC"},
                                                    "raw_arguments": "{\"city\": \"NYC\"}"}]
    r = client.get(f"/v1/datasets/{ds['id']}/export")
    assert r.headers["x-dataset-sha256"] == ds["content_sha256"]
    assert r.headers["content-disposition"] == 'attachment; filename="ds-all.jsonl"'


def test_openai_shape_rebuilds_tool_calls_and_zero_weights_unsupervised_turns(client):
    tid = ingest(client, "weights")
    # annotator: the final answer (message 4) is not to be learned; message 2 keeps reason + action
    assert put_spans(client, tid, [s for s in AUTO if s["message"] != 4], '"1"').status_code == 200
    approve(client, tid)
    react = client.post("/v1/trajectories", json=REACT).json()["id"]
    approve(client, react)
    ds = create(client, eval_fraction=0).json()
    examples = _lines(client.get(f"/v1/datasets/{ds['id']}/export?format=openai"))
    assert len(examples) == 2
    for example in examples:
        check_openai_example(example)
    by_first_user = {e["messages"][1]["content"] if e["messages"][0]["role"] == "system"
                     else e["messages"][0]["content"]: e for e in examples}
    chat = by_first_user["Weather in NYC? ☀️"]
    assert chat["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Weather in NYC? ☀️"},
        {"role": "assistant", "content": "I should look it up.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"NYC\"}"}}]},
        {"role": "tool", "content": "{\"temp_c\": 21}", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It is 21°C in NYC.", "weight": 0},
    ]
    assert chat["tools"][0]["function"]["name"] == "get_weather"
    react_example = next(e for e in examples if e is not chat)
    assert "tools" not in react_example
    roles = [m["role"] for m in react_example["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant"]  # observations answer no call
    assert react_example["messages"][2]["content"].startswith("Arthur's Magazine was")
    assert all("weight" not in m and "tool_calls" not in m for m in react_example["messages"])


def test_split_selection_and_unknown_values(app, client):
    tid = ingest_approved(client, "seed")
    clone(app, tid, 39)
    ds = create(client, eval_fraction=0.5, seed=1).json()
    train = _lines(client.get(f"/v1/datasets/{ds['id']}/export?split=train"))
    evals = _lines(client.get(f"/v1/datasets/{ds['id']}/export?split=eval&format=jsonl"))
    everything = _lines(client.get(f"/v1/datasets/{ds['id']}/export?split=all"))
    assert {r["split"] for r in train} == {"train"} and {r["split"] for r in evals} == {"eval"}
    assert len(train) == ds["counts"]["train"] and len(evals) == ds["counts"]["eval"] > 0
    items = client.get(f"/v1/datasets/{ds['id']}/items").json()["items"]
    assert [r["id"] for r in everything] == [i["trajectory_id"] for i in items]  # dataset order
    assert len(_lines(client.get(f"/v1/datasets/{ds['id']}/export?format=openai&split=eval"))) == len(evals)
    assert client.get(f"/v1/datasets/{ds['id']}/export?format=csv").status_code == 422
    assert client.get(f"/v1/datasets/{ds['id']}/export?split=test").status_code == 422
    assert client.get(f"/v1/datasets/{uuid.uuid4()}/export").status_code == 404


def test_export_streams_20k_items_in_constant_memory(app, client):
    tid = ingest_approved(client, "big")
    clone(app, tid, 19_999)
    r = create(client, "big")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["counts"]["items"] == 20_000

    gen = app.state.session_factory()
    session = next(gen)
    try:
        tracemalloc.start()
        total = lines = 0
        for chunk in iter_export(session, uuid.UUID(ds["id"]), "jsonl", None):
            if not total:  # rows come from a server-side cursor (libpq memory is invisible to tracemalloc)
                assert session.execute(text("SELECT count(*) FROM pg_cursors")).scalar_one() == 1
            total += len(chunk)
            lines += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        gen.close()
    assert lines == 20_000 and total > 15_000_000
    assert peak < total / 10, f"peak {peak} bytes while exporting {total} bytes"

    with client.stream("GET", f"/v1/datasets/{ds['id']}/export?format=openai") as r:
        assert r.status_code == 200
        chunks = sum(1 for _ in r.iter_raw())
        assert r.num_bytes_downloaded > 10_000_000
    assert chunks > 10  # many chunks, not one body
