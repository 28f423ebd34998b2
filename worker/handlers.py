"""What a worker does with each kind of job: a registry of handlers and the context they get.

A handler is ``handler(ctx: JobContext) -> dict``; the dict is stored as the job's ``result``.
It must call ``ctx.should_stop()`` regularly (the trainer does so every step) and, when that
turns True, save what it has (a checkpoint) and return ``{"status": "stopped", ...}``: the worker
then cancels the job or hands it back, depending on why it stopped. A job that runs again (after
a hand-back or a dead worker) gets the same ``out_dir`` and should resume from what it finds
there. Raising ``PermanentJobError`` fails the job at once; any other exception is retried.

More kinds can be added by plugins: ``DISTILLERY_WORKER_PLUGINS="pkg.module,pkg.other:setup"``
imports each module (its ``@register`` decorators run) and calls ``setup()`` when named.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from typing import Any

from worker.context import JobContext, PermanentJobError

Handler = Callable[[JobContext], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def register(kind: str) -> Callable[[Handler], Handler]:
    """Decorator: ``@register("distill")`` makes the function the handler of that job kind."""

    def deco(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn

    return deco


def load_plugins(spec: str | None) -> None:
    """Import ``module`` / ``module:setup`` entries (comma-separated), calling each named setup()."""
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        module_name, _, attr = item.partition(":")
        module = importlib.import_module(module_name)
        if attr:
            getattr(module, attr)()


# -- distill -------------------------------------------------------------------------------------------------


def load_dataset_records(ctx: JobContext) -> list[dict[str, Any]]:
    """The job's dataset records (CONTRACTS "Dataset record" plus metadata, ``split`` included), read
    from the dataset's immutable snapshot in the database (``app.datasets.repository``)."""
    from app.datasets import records as datasets
    from app.db import Database
    from app.embedded import resolve_database_url

    dataset_id = ctx.dataset_id or ctx.config.get("dataset_id")
    if not dataset_id:
        raise PermanentJobError("a distill job needs a dataset_id")
    try:
        key = uuid.UUID(str(dataset_id))
    except ValueError:
        raise PermanentJobError(f"dataset_id {dataset_id!r} is not a uuid") from None
    db = Database(resolve_database_url(ctx.settings.database_url, ctx.settings.pgdata_dir), ctx.settings)
    try:
        with db.sessionmaker() as session:
            records = datasets.load_records(session, key)
    finally:
        db.dispose()
    if records is None:
        raise PermanentJobError(f"dataset {dataset_id} not found")
    if not records:
        raise PermanentJobError(f"dataset {dataset_id} is empty")
    return records


@register("distill")
def distill(ctx: JobContext) -> dict[str, Any]:
    """Train the student on the job's dataset (in-process, or under torchrun for resources.gpus > 1)."""
    from worker.runs import run_distill

    return run_distill(ctx, load_dataset_records(ctx))


@register("evaluate")
def evaluate(ctx: JobContext) -> dict[str, Any]:
    """Score a model on a split of the job's dataset; writes out_dir/eval_report.json."""
    from worker.runs import run_evaluate

    return run_evaluate(ctx, load_dataset_records(ctx))
