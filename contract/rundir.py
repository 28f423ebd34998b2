"""A job's run directory: its layout, the metrics file, the train result and the trainer's exit codes.

One owner for what the worker writes and the API serves (``settings.data_dir/jobs/{id}``)::

    metrics.jsonl            one JSON object per line: a step row {step, loss, ...} or an eval row {step, eval}
    eval_before.json         evaluation before training (a resumed run reuses it)
    eval_report.json         {before, after, delta} (distill) or the evaluate job's report
    loss_curves.png          the loss-curve plot
    checkpoints/step-N/      a complete checkpoint (``meta.json`` written last, ``complete: true``)
    final/                   the trained model in ``save_pretrained`` form
    inputs/config.json       the job config handed to torchrun ranks
    inputs/data.jsonl        the dataset records handed to torchrun ranks
    train.log                the ranks' stderr
    .leases/<token>.json     the lease of the attempt holding the job, for its ranks' fence (``worker.fence``)

Hidden entries (a leading dot) are an attempt's own: its lease file, and what it assembles before promoting
it (``.<name>.attempt-<token>``, ``checkpoints/.tmp-…``); they are never listed as artifacts.

The trainer's exit codes (``ExitCode``) and the train result (``TrainResult``, serialised by
``to_json`` / ``from_json`` across the torchrun boundary and shaped by ``job_result`` into what the
job stores) live here too, so the in-process and the torchrun paths agree by construction.
Torch-free and database-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

METRICS = "metrics.jsonl"
EVAL_BEFORE = "eval_before.json"
EVAL_REPORT = "eval_report.json"
PLOT = "loss_curves.png"
CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "step-"
FINAL = "final"
INPUTS = "inputs"
TRAIN_LOG = "train.log"
LEASES = ".leases"
REPORTS = frozenset({EVAL_REPORT, EVAL_BEFORE, "result.json"})


class ExitCode(IntEnum):
    """Exit codes of ``python -m worker.training.train`` (one definition for both sides)."""

    COMPLETED = 0
    FAILED = 1  # anything unexpected: the attempt is retried
    BAD_INPUT = 2  # a permanent error (bad config or data, incompatible teacher, no trainable example)
    STOPPED = 75  # EX_TEMPFAIL: stopped cooperatively after writing a checkpoint


@dataclass(frozen=True)
class RunDir:
    """Paths inside one job's run directory."""

    root: Path

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def eval_before(self) -> Path:
        return self.root / EVAL_BEFORE

    @property
    def eval_report(self) -> Path:
        return self.root / EVAL_REPORT

    @property
    def plot(self) -> Path:
        return self.root / PLOT

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def final(self) -> Path:
        return self.root / FINAL

    @property
    def inputs(self) -> Path:
        return self.root / INPUTS

    @property
    def input_config(self) -> Path:
        return self.inputs / "config.json"

    @property
    def input_data(self) -> Path:
        return self.inputs / "data.jsonl"

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step:08d}"

    def lease_file(self, token: object) -> Path:
        """Where the worker publishes the lease of the attempt with this token (its ranks read it)."""
        return self.root / LEASES / f"{token}.json"


# -- metrics.jsonl --------------------------------------------------------------------------------------


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def read_metrics(path: Path, after_step: int = 0, limit: int | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(step rows, eval rows) with step > ``after_step``; at most ``limit`` step rows.

    Eval rows are returned up to the last step row returned, so paging never drops one. A line being
    written right now (not yet valid JSON) is skipped. Raises FileNotFoundError when there is no file.
    """
    rows: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            step = row.get("step") if isinstance(row, dict) else None
            if not isinstance(step, int) or step <= after_step:
                continue
            if "eval" in row:
                if limit is None or len(rows) < limit or (rows and step <= rows[-1]["step"]):
                    evals.append(row)
                continue
            if limit is not None and len(rows) >= limit:
                break
            rows.append(row)
    return rows, evals


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop the lines written after the checkpoint a run resumes from (they will be recomputed)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            step = json.loads(line).get("step", 0)
        except ValueError:  # a line cut short by a crash
            continue
        if isinstance(step, int) and step <= last_step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# -- checkpoints -------------------------------------------------------------------------------------------


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (``meta.json`` says ``complete: true``), oldest first."""
    base = RunDir(Path(root)).checkpoints
    found: list[tuple[int, Path]] = []
    if not base.is_dir():
        return found
    for path in base.iterdir():
        if not path.name.startswith(CHECKPOINT_PREFIX) or not path.is_dir():
            continue
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        step = meta.get("step")
        if meta.get("complete") is True and isinstance(step, int) and not isinstance(step, bool):
            found.append((step, path))
    return sorted(found)


def checkpoint_metas(root: Path) -> list[dict[str, Any]]:
    """``meta.json`` of each complete checkpoint (step order), without the config it repeats, with its
    path relative to the run directory."""
    out: list[dict[str, Any]] = []
    for _step, path in list_checkpoints(root):
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        meta.pop("config", None)
        out.append({"path": path.relative_to(root).as_posix(), **meta})
    return out


# -- the train result ------------------------------------------------------------------------------------


def _path(value: Any) -> Path | None:
    return None if value is None else Path(value)


def _str(value: Path | None) -> str | None:
    return None if value is None else str(value)


@dataclass
class TrainResult:
    """What a training run ends with; ``history`` (the step rows) stays in the process that trained."""

    status: Literal["completed", "stopped"]
    steps: int
    total_steps: int
    final_metrics: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    resumed_from_step: int | None = None
    final_dir: Path | None = None
    checkpoint_dir: Path | None = None
    eval_report_path: Path | None = None
    plot_path: Path | None = None
    eval_report: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings, no history): the torchrun ranks' result event."""
        return {
            "status": self.status,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "final_metrics": self.final_metrics,
            "skipped": self.skipped,
            "resumed_from_step": self.resumed_from_step,
            "final_dir": _str(self.final_dir),
            "checkpoint_dir": _str(self.checkpoint_dir),
            "eval_report_path": _str(self.eval_report_path),
            "plot_path": _str(self.plot_path),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        status = data.get("status")
        if status not in ("completed", "stopped"):
            raise ValueError(f"a train result's status must be 'completed' or 'stopped', got {status!r}")
        return cls(
            status=status,
            steps=int(data.get("steps", 0)),
            total_steps=int(data.get("total_steps", 0)),
            final_metrics=dict(data.get("final_metrics") or {}),
            skipped=dict(data.get("skipped") or {}),
            resumed_from_step=data.get("resumed_from_step"),
            final_dir=_path(data.get("final_dir")),
            checkpoint_dir=_path(data.get("checkpoint_dir")),
            eval_report_path=_path(data.get("eval_report_path")),
            plot_path=_path(data.get("plot_path")),
        )

    def job_result(self, out_dir: Path) -> dict[str, Any]:
        """The dict stored as a distill job's ``result``; paths are absolute on the worker (the API
        serves them from the job's run directory)."""
        report = self.eval_report
        if report is None and self.eval_report_path is not None and self.eval_report_path.is_file():
            report = json.loads(self.eval_report_path.read_text())
        metrics = RunDir(Path(out_dir)).metrics
        return {
            "status": self.status,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "resumed_from_step": self.resumed_from_step,
            "final_metrics": self.final_metrics,
            "skipped": self.skipped,
            "eval_report": report,
            "paths": {
                "out_dir": str(out_dir),
                "final_model": _str(self.final_dir),
                "checkpoint": _str(self.checkpoint_dir),
                "metrics": str(metrics) if metrics.exists() else None,
                "eval_report": _str(self.eval_report_path),
                "plot": _str(self.plot_path),
            },
        }
