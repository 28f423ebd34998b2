"""The run-directory contract: metrics paging and trimming, complete checkpoints, the train result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.rundir import (
    ExitCode,
    RunDir,
    TrainResult,
    append_metrics,
    checkpoint_metas,
    list_checkpoints,
    read_metrics,
    trim_metrics,
)
from contract.validation import field_path, pydantic_errors


def _metrics(path: Path, steps: int, eval_every: int = 0) -> None:
    for step in range(1, steps + 1):
        append_metrics(path, {"step": step, "loss": 1.0 / step})
        if eval_every and step % eval_every == 0:
            append_metrics(path, {"step": step, "eval": {"action": {"nll": 0.5}}})


def test_read_metrics_pages_without_losing_eval_rows(tmp_path: Path) -> None:
    path = RunDir(tmp_path).metrics
    _metrics(path, 10, eval_every=3)
    rows, evals = read_metrics(path, after_step=0, limit=4)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [e["step"] for e in evals] == [3]
    rows, evals = read_metrics(path, after_step=4, limit=4)
    assert [r["step"] for r in rows] == [5, 6, 7, 8]
    assert [e["step"] for e in evals] == [6]
    rows, evals = read_metrics(path, after_step=8)
    assert [r["step"] for r in rows] == [9, 10]
    assert [e["step"] for e in evals] == [9]


def test_read_metrics_skips_a_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _metrics(path, 2)
    with path.open("a") as fh:
        fh.write('{"step": 3, "lo')
    rows, _ = read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2]
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "absent.jsonl")


def test_trim_metrics_drops_lines_after_the_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _metrics(path, 6, eval_every=2)
    with path.open("a") as fh:
        fh.write('{"step": 7, "lo')  # cut short by a crash
    trim_metrics(path, 4)
    rows, evals = read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [e["step"] for e in evals] == [2, 4]
    assert path.read_text().endswith("\n")
    trim_metrics(tmp_path / "absent.jsonl", 3)  # nothing to trim is fine


def _checkpoint(run: RunDir, step: int, complete: bool) -> Path:
    path = run.checkpoint(step)
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"step": step, "complete": complete, "config": {"x": 1},
                                                "dataset_hash": f"h{step}"}))
    return path


def test_only_complete_checkpoints_count(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _checkpoint(run, 10, True)
    _checkpoint(run, 20, False)
    _checkpoint(run, 5, True)
    (run.checkpoints / ".tmp-step-30").mkdir()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [5, 10]
    assert run.checkpoint(10).name == "step-00000010"
    metas = checkpoint_metas(tmp_path)
    assert [m["path"] for m in metas] == ["checkpoints/step-00000005", "checkpoints/step-00000010"]
    assert all("config" not in m for m in metas)


def test_train_result_crosses_the_process_boundary(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.eval_report.write_text(json.dumps({"after": {"action": {"nll": 0.1}}}))
    _metrics(run.metrics, 1)
    result = TrainResult(status="completed", steps=8, total_steps=8, final_metrics={"loss": 0.5},
                         skipped={"too_long": 1}, resumed_from_step=4, final_dir=run.final,
                         checkpoint_dir=run.checkpoint(8), eval_report_path=run.eval_report, plot_path=run.plot,
                         history=[{"step": 8}])
    wire = json.loads(json.dumps(result.to_json()))
    back = TrainResult.from_json(wire)
    assert back == TrainResult(**{**result.__dict__, "history": []})
    stored = back.job_result(tmp_path)
    assert stored["eval_report"] == {"after": {"action": {"nll": 0.1}}}
    assert stored["paths"] == {"out_dir": str(tmp_path), "final_model": str(run.final),
                               "checkpoint": str(run.checkpoint(8)), "metrics": str(run.metrics),
                               "eval_report": str(run.eval_report), "plot": str(run.plot)}
    assert stored["resumed_from_step"] == 4 and stored["skipped"] == {"too_long": 1}
    with pytest.raises(ValueError, match="status"):
        TrainResult.from_json({"status": "weird"})


def test_exit_codes_are_the_documented_ones() -> None:
    assert (ExitCode.COMPLETED, ExitCode.FAILED, ExitCode.BAD_INPUT, ExitCode.STOPPED) == (0, 1, 2, 75)


def test_field_paths() -> None:
    assert field_path(("body", "messages", 3, "text")) == "messages[3].text"
    assert field_path(("metadata", "0")) == "metadata.0"  # a key that looks like a number stays a key
    assert field_path(()) == "body" and field_path(("body",)) == "body"
    assert field_path(("training", "lr"), "config") == "config.training.lr"
    errors = [{"loc": ("body", "items", 0), "type": "missing", "msg": "Field required"}]
    assert pydantic_errors(errors) == [{"field": "items[0]", "code": "missing", "message": "Field required"}]
