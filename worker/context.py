"""What a job handler gets (``JobContext``) and the job errors, with their permanence defined once.

A handler is ``handler(ctx: JobContext) -> dict``; the dict is stored as the job's ``result``. It
must call ``ctx.should_stop()`` regularly (the trainer does so every step) and, when that turns
True, save what it has (a checkpoint) and return ``{"status": "stopped", ...}``: the worker then
cancels the job or hands it back, depending on why it stopped. A job that runs again (after a
hand-back or a dead worker) gets the same ``out_dir`` and resumes from what it finds there. Its
data comes through ``ctx.dataset_records()`` (the worker's store, ``worker.store``). What it writes there
goes through ``ctx.fence`` (``worker.fence``): ``check()`` before an append, ``promote()`` of what it
assembled under ``scratch()``; the trainer does so by itself. A fence raises ``worker.fence.LeaseLost`` once
the attempt's lease is gone: not a permanent error, the worker settles the job by the lease's state.

Permanence: ``is_permanent(exc)`` is the one rule, used in-process (the worker loop) and under
torchrun (the ranks' exit code, read back by the launcher). A permanent error fails the job at once;
any other exception is retried with backoff up to ``max_attempts``. Permanent are: every
``PermanentJobError`` (``BadJobInput`` — a config or data the trainer cannot use: nothing to train,
a checkpoint from another run; ``ModelLoadError`` — a model that cannot be loaded, named in the
message), an incompatible teacher (``contract.vocab.TokenizerMismatch``) and an invalid config
(pydantic's ``ValidationError``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from contract.rundir import RunDir
from contract.spans import DatasetRecord
from contract.vocab import TokenizerMismatch
from worker.fence import Fence, Unfenced

if TYPE_CHECKING:
    from app.config import Settings


class PermanentJobError(Exception):
    """A failure that retrying cannot fix (bad config, missing dataset): the job fails at once."""


class BadJobInput(PermanentJobError, ValueError):
    """The job's config or data cannot be trained on (nothing trainable, a checkpoint of another run)."""


class ModelLoadError(PermanentJobError):
    """A model or tokenizer that cannot be loaded; the message names it and where it was looked up."""


def is_permanent(exc: BaseException) -> bool:
    """True when retrying ``exc`` cannot help (see the module docstring): one rule for every launcher."""
    if isinstance(exc, PermanentJobError | TokenizerMismatch):
        return True
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover - pydantic is a dependency of every install
        return False
    return isinstance(exc, ValidationError)


class JobStore(Protocol):
    """What a handler may read from the worker's store (``worker.store.Store``)."""

    def load_dataset_records(self, dataset_id: uuid.UUID) -> list[DatasetRecord]: ...


@dataclass
class JobContext:
    job_id: uuid.UUID
    kind: str
    config: dict[str, Any]
    attempt: int
    max_attempts: int
    dataset_id: uuid.UUID | None
    out_dir: Path
    settings: Settings
    store: JobStore
    _report_progress: Callable[[dict[str, Any]], None] = field(repr=False)
    _log: Callable[[str, str, dict[str, Any] | None], None] = field(repr=False)
    _should_stop: Callable[[], bool] = field(repr=False)
    fence: Fence = field(default_factory=Unfenced, repr=False)  # guards the files this attempt writes

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.out_dir)

    def dataset_records(self) -> list[DatasetRecord]:
        """The records of the job's dataset (its ``dataset_id`` column, else ``config["dataset_id"]``).

        No dataset id, one that is not a uuid, or a dataset missing or empty: ``PermanentJobError``.
        """
        dataset_id = self.dataset_id or self.config.get("dataset_id")
        if not dataset_id:
            raise PermanentJobError(f"a job of kind {self.kind!r} needs a dataset_id")
        try:
            key = uuid.UUID(str(dataset_id))
        except ValueError:
            raise PermanentJobError(f"dataset_id {dataset_id!r} is not a uuid") from None
        return self.store.load_dataset_records(key)

    def report_progress(self, progress: dict[str, Any]) -> None:
        """Store the job's progress ({step, total, tokens_per_s, eta_s, ...}) and a progress event."""
        self._report_progress(progress)

    def log(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        """A line in the job's event log (and the worker's log)."""
        self._log(message, level, data)

    def should_stop(self) -> bool:
        """True once the job must stop: cancel requested, worker shutting down, or lease lost (or past its
        renew deadline)."""
        return self._should_stop()
