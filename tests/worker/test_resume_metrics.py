"""A run that starts over (no complete checkpoint in its run directory: the attempt before died before its
first one) drops the metric lines that attempt left, so every step appears once."""

from __future__ import annotations

import json
from pathlib import Path

from tests.worker.test_recipe import make_config, make_records
from worker.training.trainer import run_training


def test_metrics_of_an_attempt_without_checkpoint_are_redone(chatml_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    stale = [{"step": 1, "loss": 99.0}, {"step": 2, "loss": 98.0}]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stale) + '{"step": 3, "lo')
    run_training(make_config(chatml_model_dir, training={"max_steps": 2}), make_records(4), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert all(r["loss"] < 90 for r in rows if "loss" in r)
