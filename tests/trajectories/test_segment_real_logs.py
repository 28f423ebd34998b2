"""Real public agent logs (tests/data/logs/<family>/, sources in each README.md): every log ingests
through the API, its export re-ingests to the same content and spans, and the auto spans agree with
the hand-labelled gold spans (token-weighted F1 >= 0.95, the metric of bench/segmenter.py)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.segmenter import Counts, GoldLog, load_logs, parse_log, token_labels
from contract.formats import FORMATS
from contract.spans import validate_spans

LOGS = [log for log in load_logs() if log.request.get("format") in FORMATS]
FAMILIES = {"swe-agent", "mini-swe-agent", "smolagents-toolcalling", "smolagents-code"}


def test_every_family_has_real_logs_with_a_readme() -> None:
    present = {log.family for log in LOGS}
    assert present >= FAMILIES, FAMILIES - present
    for log in LOGS:
        readme = (log.path.parent / "README.md").read_text(encoding="utf-8")
        assert log.path.name in readme and "icen" in readme, log.path  # names the file and its licence


def _ingest(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 201, r.text
    stored = client.get(f"/v1/trajectories/{r.json()['id']}").json()
    return {**stored, "receipt": r.json()}


@pytest.mark.parametrize("log", LOGS, ids=[f"{log.family}/{log.path.stem}" for log in LOGS])
def test_real_log_ingests_round_trips_and_matches_gold(client: Any, log: GoldLog) -> None:
    stored = _ingest(client, log.request)
    parsed = parse_log(log)
    assert stored["messages"] == parsed.messages
    assert stored["spans"] == [dict(s) for s in parsed.spans]
    assert validate_spans(stored["messages"], log.gold_spans) == []

    exported = client.get(f"/v1/trajectories/{stored['id']}/export").json()
    again = _ingest(client, {**exported, "source": f"{log.request['source']}-reposted"})
    assert again["receipt"]["content_sha256"] == stored["receipt"]["content_sha256"]
    assert again["messages"] == stored["messages"]
    assert again["spans"] == stored["spans"]

    counts = Counts()
    counts.add(token_labels(stored["messages"], log.gold_spans), token_labels(stored["messages"], stored["spans"]))
    assert counts.f1() >= 0.95, (counts.tp, counts.fp, counts.fn)
    assert counts.gold_tokens > 0


def test_the_metric_sees_a_wrong_segmentation() -> None:
    """The F1 falls when the auto spans label the gold's actions as reason (the check can fail)."""
    log = next(log for log in LOGS if log.family == "swe-agent")
    parsed = parse_log(log)
    flipped = [{**s, "kind": "reason"} if s["kind"] == "action" else s for s in parsed.spans]
    counts = Counts()
    counts.add(token_labels(parsed.messages, log.gold_spans), token_labels(parsed.messages, flipped))
    assert counts.f1("action") == 0.0 and counts.f1() < 0.95


def test_an_unknown_tool_call_id_in_a_list_is_refused_by_the_api(client: Any) -> None:
    log = next(log for log in LOGS if log.path.stem == "fc-test-repo")
    body = {**log.request, "history": [dict(h) for h in log.request["history"]]}
    body["history"][3]["tool_call_ids"] = ["call_made_up"]
    r = client.post("/v1/trajectories", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["errors"][0]
    assert (error["field"], error["code"]) == ("history[3].tool_call_ids[0]", "unknown_tool_call_id")
