"""A job's files: listed and served from its folder ``settings.data_dir/jobs/{id}`` and nowhere else.

Workers write there (the run-directory layout of ``contract.rundir``: metrics, reports, the loss-curve
plot, checkpoints with their ``meta.json``, the final model in ``save_pretrained`` form), so the API and
the workers must share ``data_dir`` (one host, or a shared volume). Hidden entries (a checkpoint being
assembled) and symbolic links are never listed; a requested path is resolved, symlinks followed, and
must still be a regular file inside the job's folder, so ``..``, absolute paths and links out of the
folder all answer 404.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from app.errors import NotFound
from contract import rundir


def artifact_kind(rel: PurePosixPath) -> str:
    top, name = rel.parts[0], rel.name
    if top == rundir.CHECKPOINTS:
        return "checkpoint"
    if top == rundir.FINAL:
        return "model"
    if top == rundir.INPUTS:
        return "input"
    if name in rundir.REPORTS:
        return "report"
    if name.endswith((".png", ".svg", ".jpg")):
        return "plot"
    if name == rundir.METRICS:
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

