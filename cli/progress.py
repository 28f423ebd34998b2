"""Following a job until it ends, from its Server-Sent Events: a live progress bar on a terminal, plain
progress lines anywhere else (a pipe, a log file, CI), so a followed job is never silent.

``follow_job`` is shared by ``distillery jobs follow`` / ``jobs submit --follow`` and ``distillery demo``.
Everything it prints goes to stderr; the caller prints the outcome.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from distillery import DistilleryClient

PLAIN_INTERVAL_S = 5.0  # plain mode: at most one progress line this often (plus the first and the last)


def fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def fmt_eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(row: dict[str, Any]) -> str:
    """One plain progress line: ``step 40/800  loss 2.1234  8,123 tok/s  ETA 0:01:40``."""
    total = row.get("total", row.get("total_steps"))
    return (f"step {row.get('step', 0)}/{total if total is not None else '?'}  loss {fmt(row.get('loss'), '.4f')}  "
            f"{fmt(row.get('tokens_per_s'), ',.0f')} tok/s  ETA {fmt_eta(row.get('eta_s'))}")


def interactive_terminal() -> bool:
    """A live bar only when a person watches both streams; anything redirected gets plain lines."""
    return sys.stderr.isatty() and sys.stdout.isatty()


def follow_job(client: DistilleryClient, job_id: str, *, interactive: bool | None = None,
               interval: float = PLAIN_INTERVAL_S) -> str:
    """Show the job's progress, state changes and log lines until it ends; its final status."""
    live = interactive_terminal() if interactive is None else interactive
    job = client.get_job(job_id)
    status = _follow_live(client, job_id, job) if live else _follow_plain(client, job_id, job, interval)
    final = client.get_job(job_id)
    if final["status"] == "failed" and final.get("error"):
        print(f"failed: {final['error'].strip().splitlines()[-1]}", file=sys.stderr, flush=True)
    return status


def _stream(client: DistilleryClient, job_id: str, status: str,
            handlers: dict[str, Callable[[dict[str, Any]], None]]) -> str:
    for event in client.stream_events(job_id):
        if event.event == "end":
            return str(event.data.get("status"))
        handler = handlers.get(event.event)
        if handler is not None:
            handler(event.data)
    return status


def _follow_plain(client: DistilleryClient, job_id: str, job: dict[str, Any], interval: float) -> str:
    last_printed = -float("inf")
    pending: dict[str, Any] | None = None

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def on_progress(data: dict[str, Any]) -> None:
        nonlocal last_printed, pending
        row = data.get("data") or {}
        total = row.get("total", row.get("total_steps"))
        now = time.monotonic()
        if now - last_printed >= interval or (total is not None and row.get("step") == total):
            say(progress_line(row))
            last_printed, pending = now, None
        else:
            pending = row  # printed before the next state line, so the last step is never lost

    def flush_pending() -> None:
        nonlocal pending
        if pending is not None:
            say(progress_line(pending))
            pending = None

    def on_state(data: dict[str, Any]) -> None:
        flush_pending()
        say(f"{str(data.get('ts', ''))[:19]} {data.get('message')}")

    def on_log(data: dict[str, Any]) -> None:
        flush_pending()
        say(f"{str(data.get('ts', ''))[:19]} {data.get('level')} {data.get('message')}")

    status = _stream(client, job_id, job["status"], {"progress": on_progress, "state": on_state, "log": on_log})
    flush_pending()
    return status


def _follow_live(client: DistilleryClient, job_id: str, job: dict[str, Any]) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = (job.get("progress") or {}).get("total")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed:.0f}/{task.fields[of]}"), TextColumn("loss {task.fields[loss]}"),
               TextColumn("{task.fields[tps]} tok/s"), TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(job["status"], total=total, of=total or "?", loss="-", tps="-", eta="-")

        def on_progress(data: dict[str, Any]) -> None:
            row = data.get("data") or {}
            of = row.get("total", row.get("total_steps"))
            progress.update(task, completed=row.get("step", 0), total=of, of=of or "?",
                            loss=fmt(row.get("loss"), ".4f"), tps=fmt(row.get("tokens_per_s"), ",.0f"),
                            eta=fmt_eta(row.get("eta_s")))

        def on_state(data: dict[str, Any]) -> None:
            new = (data.get("data") or {}).get("status")
            if new:
                progress.update(task, description=new)
            progress.console.print(f"[dim]{str(data.get('ts', ''))[:19]}[/dim] {escape(str(data.get('message')))}")

        def on_log(data: dict[str, Any]) -> None:
            progress.console.print(f"[dim]{str(data.get('ts', ''))[:19]} {data.get('level')}[/dim] "
                                   f"{escape(str(data.get('message')))}")

        return _stream(client, job_id, job["status"], {"progress": on_progress, "state": on_state, "log": on_log})
