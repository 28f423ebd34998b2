"""What the sync and async clients share: their options, the recorder factory, and the bookkeeping of
delivering spooled trajectories (single posts, background batches and replays end the same way)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillery.batching import Batching
from distillery.recorder import Trajectory
from distillery.spool import Claimed, ReplayReport, Spool, directory_for, is_permanent
from distillery.transport import Retry
from distillery.wire import DistilleryError

log = logging.getLogger("distillery")

DEFAULT_URL = "http://127.0.0.1:8000"
SpoolOption = bool | str | Path | Spool | None


class ClientBase:
    """Options common to ``Distillery`` and ``AsyncDistillery``.

    ``base_url`` defaults to ``$DISTILLERY_API_URL`` (else ``http://127.0.0.1:8000``), ``key`` to
    ``$DISTILLERY_API_KEY``. ``retry``: the retry policy of every call. ``batching``: the background
    queue behind ``submit``. ``spool``: True (default: a directory per server under the user's cache
    dir, or ``$DISTILLERY_SPOOL_DIR``), a path, or False for none. ``replay``: replay what the spool
    holds when the client starts (in the background)."""

    def __init__(self, base_url: str | None, key: str | None, *, retry: Retry | None, batching: Batching | None,
                 spool: SpoolOption, replay: bool) -> None:
        self.base_url = (base_url or os.environ.get("DISTILLERY_API_URL") or DEFAULT_URL).rstrip("/")
        key = key or os.environ.get("DISTILLERY_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.retry = retry or Retry()
        self.batching = batching or Batching()
        self.spool: Spool | None = (spool if isinstance(spool, Spool) else Spool(directory_for(self.base_url))
                                    if spool is True else Spool(spool) if spool else None)
        self.replay_on_start = replay and self.spool is not None and bool(self.spool.keys())

    def trajectory(self, *, source: str, task: str | None = None, external_id: str | None = None,
                   teacher_model: str | None = None, task_type: str | None = None, system: str | None = None,
                   tools: list[dict[str, Any]] | None = None, tags: Sequence[str] = (),
                   metadata: dict[str, Any] | None = None, reward: float | None = None,
                   background: bool = False) -> Trajectory:
        """A recorder (use it with ``with``, or ``async with`` on ``AsyncDistillery``): see
        ``distillery.recorder``. ``external_id`` defaults to a new ``run-<uuid>``; ``background`` posts it
        through the batch queue on exit instead of waiting for the answer."""
        return Trajectory(self, source=source, task=task, external_id=external_id, teacher_model=teacher_model,  # type: ignore[arg-type]
                          task_type=task_type, system=system, tools=tools, tags=tags, metadata=metadata,
                          reward=reward, background=background)

    # -- delivery bookkeeping -------------------------------------------------------------------------------

    def _settle(self, t: Trajectory, claim: Claimed | None, receipt: dict[str, Any] | None,
                error: BaseException | None) -> None:
        """A recorded trajectory's answer: release or reject its spool record and tell the recorder."""
        if error is None:
            if claim is not None and self.spool is not None:
                self.spool.settle(claim, status=200)
            t.settled("stored", receipt)
            return
        if claim is not None and self.spool is not None:
            outcome = self.spool.settle(claim, error=error)
            t.settled("rejected" if outcome == "rejected" else "spooled", error=error)
            log.warning("distillery: trajectory %r %s: %s", t.external_id,
                        "was rejected (kept under rejected/ in the spool)" if outcome == "rejected"
                        else "is spooled for a later replay", error)
            return
        t.settled("rejected" if is_permanent(error) else "unsent", error=error)
        log.error("distillery: trajectory %r was not stored and there is no spool: %s", t.external_id, error)

    def _settle_replayed(self, claimed: list[Claimed], answer: dict[str, Any] | None, error: BaseException | None,
                         report: ReplayReport) -> None:
        """A replayed batch's answer, item by item (a whole-batch failure keeps every record)."""
        assert self.spool is not None
        if error is not None:
            for c in claimed:
                self.spool.settle(c)
            report.kept += len(claimed)
            return
        assert answer is not None
        for c, result in zip(claimed, answer["items"], strict=True):
            status = result["status"]
            item_error = None if 200 <= status < 300 else DistilleryError(status, result.get("error") or {})
            outcome = self.spool.settle(c, status=status, error=item_error)
            if outcome == "stored":
                report.stored.append(result["id"])
            elif outcome == "rejected":
                report.rejected.append(c.body.get("external_id", c.key))
                log.warning("distillery: spooled trajectory %r was rejected: %s", c.body.get("external_id"),
                            item_error)
            else:
                report.kept += 1

    def _replay_chunks(self) -> list[list[str]]:
        keys = self.spool.keys() if self.spool is not None else []
        size = max(1, self.batching.batch_size)
        return [keys[i:i + size] for i in range(0, len(keys), size)]


def splits_batch(error: BaseException, n: int) -> bool:
    """Whether a whole batch was refused for its size or shape: then its items go one by one."""
    return n > 1 and isinstance(error, DistilleryError) and error.status in (413, 422)


def as_batch_answer(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Single posts' (status, body) pairs in the shape of a batch answer."""
    items = []
    for i, (status, body) in enumerate(results):
        ok = 200 <= status < 300
        items.append({"index": i, "status": status, "id": body.get("id") if ok else None,
                      "error": None if ok else body})
    return {"items": items}
