"""The token views a distill job writes for the web page (``worker.training.views``): each token's kind
is the trainer's (reason / action / context), observation tokens are marked from the observation spans,
end-of-turn tokens are listed, and the API reads one trajectory's lines back (``app.jobs.token_views``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from app.jobs.token_views import read_views
from contract.token_views import TOKEN_VIEWS, line_prefix
from tests.worker.render_helpers import eot_token, long_trajectory
from worker.fence import Unfenced
from worker.training.render import ACTION, NONE, REASON, render_examples
from worker.training.views import token_views, write_token_views


def _records(n: int) -> list[Any]:
    records = []
    for i in range(n):
        messages, spans = long_trajectory(2 + i)
        records.append({"id": str(uuid.UUID(int=i + 1)), "messages": messages, "spans": spans, "tools": None,
                        "complexity": 0.0, "split": "eval" if i == 0 else "train"})
    return records


def test_views_carry_the_trainers_kinds_and_mark_observations(chatml_tok: Any) -> None:
    records = _records(2)
    views = list(token_views(records, chatml_tok, max_seq_len=512))
    assert [v["trajectory_id"] for v in views] == [records[1]["id"], records[0]["id"]]  # train split first
    for view, record in zip(views, [records[1], records[0]], strict=True):
        (example,) = render_examples(record["messages"], record["spans"], chatml_tok, max_seq_len=512).examples
        letters = {REASON: "r", ACTION: "a", NONE: "co"}
        assert len(view["tokens"]) == len(example.input_ids) == len(view["kinds"])
        assert all(v in letters[k] for v, k in zip(view["kinds"], example.kinds, strict=True))
        observed = "".join(t for t, k in zip(view["tokens"], view["kinds"], strict=True) if k == "o")
        assert "result 0 is 0 people" in observed and "Thought" not in observed
        turns = sum(m["role"] == "assistant" for m in record["messages"])
        assert [view["tokens"][i] for i in view["eot"]] == [eot_token(chatml_tok)] * turns
        assert all(view["kinds"][i] == "a" for i in view["eot"])


def test_written_file_is_read_back_per_trajectory(chatml_model_dir: Path, tmp_path: Path) -> None:
    records = _records(3)
    n = write_token_views(tmp_path, records, str(chatml_model_dir), max_seq_len=512, fence=Unfenced())
    lines = (tmp_path / TOKEN_VIEWS).read_text().splitlines()
    assert n == len(lines) == 3 and all(line.startswith(line_prefix(r["id"])) for line, r in
                                         zip(lines, [records[1], records[2], records[0]], strict=True))
    (view,) = read_views(tmp_path / TOKEN_VIEWS, uuid.UUID(records[2]["id"]))
    assert view["trajectory_id"] == records[2]["id"] and "r" in view["kinds"] and "a" in view["kinds"]
    assert read_views(tmp_path / TOKEN_VIEWS, uuid.uuid4()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the scratch file was promoted
