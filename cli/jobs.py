"""``distillery jobs …``: submit, list, show, follow, cancel and retry jobs, list workers, fetch artifacts.

These commands talk HTTP to a running API through ``distillery.client.DistilleryClient``: ``--api`` (default
``$DISTILLERY_API_URL`` or http://127.0.0.1:8000) and ``--key`` (``$DISTILLERY_API_KEY``). Errors print the
problem's code, detail and field errors on stderr and exit 1. ``follow`` shows the job's progress from its
Server-Sent Events (a live bar on a terminal, plain lines when redirected; ``cli.progress``) and exits 0
when the job succeeded, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from distillery import DistilleryClient, DistilleryError

jobs_cli = typer.Typer(help="Distillation jobs, through the HTTP API (--api, --key).", no_args_is_help=True)

Api = Annotated[str | None, typer.Option("--api", envvar="DISTILLERY_API_URL",
                                         help="API base URL (default http://127.0.0.1:8000).")]
Key = Annotated[str | None, typer.Option("--key", envvar="DISTILLERY_API_KEY", help="API key (scope operate).")]


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@contextmanager
def _client(api: str | None, key: str | None) -> Iterator[DistilleryClient]:
    client = DistilleryClient(api, key, spool=False)  # the CLI never replays an agent's spooled runs
    try:
        yield client
    except DistilleryError as exc:
        typer.echo(f"error: {exc.status} {exc.code}: {exc.detail}", err=True)
        for e in exc.errors:
            typer.echo(f"  {e.get('field')}: {e.get('message')} ({e.get('code')})", err=True)
        raise typer.Exit(1) from None
    except (httpx.TransportError, OSError) as exc:  # connection refused, DNS, timeouts
        typer.echo(f"error: cannot reach {client.base_url}: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()


@jobs_cli.command("submit")
def submit(
    file: Annotated[str, typer.Argument(help="A JSON job spec, or - for stdin.")],
    follow_: Annotated[bool, typer.Option("--follow", help="Then follow it like 'jobs follow'.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Replays return the same job.")] = None,
    api: Api = None, key: Key = None,
) -> None:
    """Submit a job: {kind, dataset_id, student_model, teacher_model, loss, curriculum, training, resources, …}."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
        spec = json.loads(text)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read a JSON job spec from {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    with _client(api, key) as client:
        job = client.submit_job(spec, idempotency_key=idempotency_key)
        _echo_json(job)
        if follow_:
            raise typer.Exit(_follow(client, job["id"]))


@jobs_cli.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed, cancelled.")] = None,
    kind: Annotated[str | None, typer.Option(help="distill, evaluate or capture.")] = None,
    dataset: Annotated[str | None, typer.Option(help="A dataset id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    api: Api = None, key: Key = None,
) -> None:
    """Jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    with _client(api, key) as client:
        jobs = list(client.list_jobs(status=status, kind=kind, dataset_id=dataset, limit=limit))
    if as_json:
        for job in jobs:
            typer.echo(json.dumps(job, default=str))
        return
    table = Table("id", "kind", "status", "progress", "attempts", "created", box=None)
    for job in jobs:
        p = job.get("progress") or {}
        progress = f"{p.get('step')}/{p.get('total')}" if p.get("step") is not None else ""
        table.add_row(job["id"], job["kind"], job["status"], progress, f"{job['attempts']}/{job['max_attempts']}",
                      job["created_at"][:19])
    Console().print(table)


@jobs_cli.command("show")
def show(job_id: str, api: Api = None, key: Key = None) -> None:
    """A job as JSON (status, attempts, progress, lease, error, result)."""
    with _client(api, key) as client:
        _echo_json(client.get_job(job_id))


@jobs_cli.command("cancel")
def cancel(job_id: str, api: Api = None, key: Key = None) -> None:
    """Cancel: a queued job at once; a running one checkpoints and stops within seconds."""
    with _client(api, key) as client:
        job = client.cancel_job(job_id)
    typer.echo(f"{job['id']} {job['status']}{' (cancel requested)' if job['status'] == 'running' else ''}")


@jobs_cli.command("retry")
def retry(job_id: str, api: Api = None, key: Key = None) -> None:
    """Queue a failed or cancelled job again (attempts reset; it resumes from its newest checkpoint)."""
    with _client(api, key) as client:
        job = client.retry_job(job_id)
    typer.echo(f"{job['id']} {job['status']}")


@jobs_cli.command("artifacts")
def artifacts(
    job_id: str,
    prefix: Annotated[str | None, typer.Option(help="Only files under this folder, e.g. final.")] = None,
    download: Annotated[Path | None, typer.Option(help="Download them into this folder.")] = None,
    api: Api = None, key: Key = None,
) -> None:
    """List a job's artifacts, or download them (--download DIR)."""
    with _client(api, key) as client:
        if download is not None:
            for path in client.download_artifacts(job_id, download, prefix=prefix):
                typer.echo(str(path))
            return
        for item in client.list_artifacts(job_id, prefix=prefix):
            typer.echo(f"{item['kind']:10} {item['size']:>12,}  {item['path']}")


@jobs_cli.command("lineage")
def lineage(job_id: str, api: Api = None, key: Key = None) -> None:
    """Where the job's model came from: dataset, pinned items, hashes, artifacts."""
    with _client(api, key) as client:
        _echo_json(client.lineage(job_id))


@jobs_cli.command("workers")
def workers(api: Api = None, key: Key = None) -> None:
    """Registered workers: host, devices, kinds, current job, last heartbeat, alive."""
    with _client(api, key) as client:
        for w in client.workers():
            devices = ", ".join(d.get("name", "?") for d in w["devices"]) or "cpu"
            typer.echo(f"{'alive' if w['alive'] else 'silent':6} {w['id']}  [{devices}]  kinds={','.join(w['kinds'])}"
                       f"  job={w['current_job_id'] or '-'}  heartbeat={w['last_heartbeat_at'][:19]}")


@jobs_cli.command("follow")
def follow(job_id: str, api: Api = None, key: Key = None) -> None:
    """Live progress (step/total, loss, tokens/s, ETA) until the job ends; exit 0 if it succeeded, else 1."""
    with _client(api, key) as client:
        raise typer.Exit(_follow(client, job_id))


def _follow(client: DistilleryClient, job_id: str) -> int:
    from cli.progress import follow_job

    status = follow_job(client, job_id)
    typer.echo(f"{job_id} {status}")
    return 0 if status == "succeeded" else 1
