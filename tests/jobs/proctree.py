"""A process tree read from /proc, for tests that must check real processes by pid (torchrun's ranks are the
worker's grandchildren, so looking at direct children alone proves little).

A process is identified by its pid *and* its start time, so a reused pid is never taken for the original."""

from __future__ import annotations

import os
from pathlib import Path


def stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a live process, None once it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    state, start = fields[0], int(fields[19])
    return None if state in ("Z", "X") else (state, start)


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def torchrun_tree(parent: int) -> dict[int, tuple[str, int]]:
    """torchrun processes under ``parent`` and their ranks: pid → (state, start time)."""
    tree: dict[int, tuple[str, int]] = {}
    for launcher in (p for p in children(parent) if "torch.distributed.run" in cmdline(p)):
        for pid in [launcher, *(r for r in children(launcher) if "worker.training.train" in cmdline(r))]:
            now = stat(pid)
            if now is not None:
                tree[pid] = now
    return tree


def alive(tree: dict[int, tuple[str, int]]) -> list[int]:
    """The pids of ``tree`` still running as the same processes."""
    return [pid for pid, (_, start) in tree.items() if (now := stat(pid)) is not None and now[1] == start]
