"""A job's files: listed and served from its folder ``settings.data_dir/jobs/{id}`` and nowhere else.

Workers write there (``metrics.jsonl``, ``eval_before.json``, ``eval_report.json``, ``loss_curves.png``,
``checkpoints/step-N/`` with ``meta.json``, ``final/`` in ``save_pretrained`` form), so the API and the
workers must share ``data_dir`` (one host, or a shared volume). Hidden entries (a checkpoint being
assembled) and symbolic links are never listed; a requested path is resolved, symlinks followed, and
must still be a regular file inside the job's folder, so ``..``, absolute paths and links out of the
folder all answer 404.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from app.errors import NotFound

_REPORTS = {"eval_report.json", "eval_before.json", "result.json"}


def artifact_kind(rel: PurePosixPath) -> str:
    top, name = rel.parts[0], rel.name
    if top == "checkpoints":
        return "checkpoint"
    if top == "final":
        return "model"
    if top == "inputs":
        return "input"
    if name in _REPORTS:
        return "report"
    if name.endswith((".png", ".svg", ".jpg")):
        return "plot"
    if name == "metrics.jsonl":
        return "metrics"
    if name.endswith(".log"):
        return "log"
    return "other"


def _walk(root: Path) -> Iterator[tuple[PurePosixPath, os.stat_result]]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:  # removed meanwhile (an old checkpoint pruned)
                continue
            if stat.S_ISREG(st.st_mode):
                yield PurePosixPath(path.relative_to(root).as_posix()), st


def sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def list_artifacts(root: Path, *, prefix: str | None = None, with_sha256: bool = False) -> list[dict[str, Any]]:
    """Regular files under ``root`` (sorted by path), optionally only those under ``prefix``."""
    if not root.is_dir():
        return []
    items = []
    for rel, st in _walk(root):
        if prefix and not (rel.as_posix() == prefix.strip("/") or rel.as_posix().startswith(prefix.strip("/") + "/")):
            continue
        item: dict[str, Any] = {
            "path": rel.as_posix(), "size": st.st_size, "kind": artifact_kind(rel),
            "modified_at": datetime.fromtimestamp(st.st_mtime, UTC),
        }
        if with_sha256:
            try:
                item["sha256"] = sha256_of(root / rel)
            except OSError:
                continue
        items.append(item)
    return items


def resolve_artifact(root: Path, rel: str) -> Path:
    """The file ``rel`` names inside ``root``; NotFound for anything else (traversal included)."""
    missing = NotFound(f"No artifact {rel!r} for this job.", code="artifact_not_found")
    parts = PurePosixPath(rel).parts
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or any(
        p in ("..", ".") or p.startswith(".") for p in parts
    ):
        raise missing
    base = root.resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base) or not target.is_file():
        raise missing
    return target


def checkpoint_metas(root: Path) -> list[dict[str, Any]]:
    """``meta.json`` of each complete checkpoint (step order), without the config it repeats."""
    out: list[dict[str, Any]] = []
    base = root / "checkpoints"
    if not base.is_dir():
        return out
    for meta_path in sorted(base.glob("step-*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if not meta.get("complete", True):
            continue
        meta.pop("config", None)
        out.append({"path": meta_path.parent.relative_to(root).as_posix(), **meta})
    return out


def read_metrics(path: Path, after_step: int, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(step rows, eval rows) of a metrics.jsonl with step > after_step; at most ``limit`` step rows.

    Eval rows are returned up to the last step row returned, so paging never drops one."""
    rows: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:  # a line being written right now
                continue
            step = row.get("step")
            if not isinstance(step, int) or step <= after_step:
                continue
            if "eval" in row:
                if len(rows) < limit or (rows and step <= rows[-1]["step"]):
                    evals.append(row)
                continue
            if len(rows) >= limit:
                break
            rows.append(row)
    return rows, evals
