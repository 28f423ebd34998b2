"""The ``distillery`` command line: serve the API, run a worker, migrate, manage keys, inspect masks.

Commands that need torch import the worker lazily, so ``app`` itself stays torch-free.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from cli.jobs import jobs_cli

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

cli = typer.Typer(help="Distillery: agent trajectories in, span-level distilled students out.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys (run on the server; talks to the database directly).", no_args_is_help=True)
masks_cli = typer.Typer(help="Inspect how a trajectory is rendered and masked for training.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(masks_cli, name="masks")
cli.add_typer(jobs_cli, name="jobs")
datasets_cli = typer.Typer(help="Datasets (talks to the database directly).", no_args_is_help=True)
cli.add_typer(datasets_cli, name="datasets")


def _database_url() -> str:
    from app.config import get_settings
    from app.embedded import resolve_database_url

    settings = get_settings()
    return resolve_database_url(settings.database_url, settings.pgdata_dir)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    with_worker: Annotated[bool, typer.Option("--with-worker", help="Run a job worker in this process too.")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API processes (uvicorn workers).")] = 1,
) -> None:
    """Run the API (migrating the database first). Without DISTILLERY_DATABASE_URL an embedded
    Postgres starts in the per-user data folder."""
    import uvicorn

    from app.config import get_settings
    from app.db import Database
    from app.main import create_app
    from app.migrate import upgrade
    from app.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    url = _database_url()
    upgrade(url)
    stop_worker = None
    if with_worker:
        from worker.loop import start_background_worker

        stop_worker = start_background_worker(url, settings)
    typer.echo(f"Distillery API on http://{host}:{port}  (docs: http://{host}:{port}/docs)", err=True)
    try:
        if workers == 1:
            app = create_app(settings, database=Database(url, settings))
            uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
        else:  # each process builds its own app on the already migrated database
            import os

            os.environ["DISTILLERY_DATABASE_URL"] = url
            uvicorn.run("app.main:create_worker_process_app", factory=True, host=host, port=port,
                        workers=workers, log_config=None, access_log=False)
    finally:
        if stop_worker is not None:
            stop_worker()


@cli.command()
def worker(
    once: Annotated[bool, typer.Option(help="Process at most one job, then exit.")] = False,
) -> None:
    """Run a job worker: claims distillation jobs from the database queue and trains them."""
    from app.config import get_settings
    from app.observability import configure_logging
    from worker.loop import run_worker

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    raise typer.Exit(run_worker(_database_url(), settings, once=once))


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from app.migrate import upgrade

    upgrade(_database_url(), revision)
    typer.echo(f"database at {revision}")


@db_cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (``base`` drops everything)."""
    from app.migrate import downgrade

    downgrade(_database_url(), revision)
    typer.echo(f"database at {revision}")


def _session():  # type: ignore[no-untyped-def]
    from app.config import get_settings
    from app.db import Database
    from app.migrate import upgrade

    url = _database_url()
    upgrade(url)
    return Database(url, get_settings())


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who uses the key.")],
    scopes: Annotated[list[str], typer.Option("--scopes", help="ingest, annotate, curate, operate, admin")],
) -> None:
    """Create an API key and print it (shown once)."""
    from app.auth import SCOPES, create_key

    flat = [s.strip() for item in scopes for s in item.split(",") if s.strip()]
    bad = sorted(set(flat) - set(SCOPES))
    if bad or not flat:
        typer.echo(f"unknown scopes: {', '.join(bad) or '(none given)'}; choose from {', '.join(SCOPES)}", err=True)
        raise typer.Exit(2)
    db = _session()
    with db.sessionmaker.begin() as session:
        row, key = create_key(session, name, flat)
        typer.echo(json.dumps({"id": str(row.id), "name": name, "scopes": row.scopes, "key": key}))
    db.dispose()


@keys_cli.command("list")
def keys_list() -> None:
    """List API keys (never the secrets)."""
    from sqlalchemy import select

    from app.models import ApiKey

    db = _session()
    with db.sessionmaker() as session:
        for row in session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars():
            state = "revoked" if row.revoked_at else "active"
            typer.echo(f"{row.id}  {row.prefix}  {state:8} {','.join(row.scopes):30} {row.name}")
    db.dispose()


@keys_cli.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id."""
    import uuid
    from datetime import UTC, datetime

    from app.models import ApiKey

    db = _session()
    with db.sessionmaker.begin() as session:
        row = session.get(ApiKey, uuid.UUID(key_id))
        if row is None:
            typer.echo(f"no key {key_id}", err=True)
            raise typer.Exit(1)
        row.revoked_at = row.revoked_at or datetime.now(UTC)
    typer.echo(f"revoked {key_id}")
    db.dispose()


@datasets_cli.command("export")
def datasets_export(
    dataset_id: Annotated[str, typer.Argument(help="The dataset id.")],
    out: Annotated[Path, typer.Option("--out", help="The file to write (JSON lines).")],
    format: Annotated[str, typer.Option("--format", help="jsonl (trainer records) or openai (chat fine-tuning).")
                      ] = "jsonl",
    split: Annotated[str, typer.Option("--split", help="train, eval or all.")] = "all",
) -> None:
    """Write a dataset's records to a file, streaming from the database with a progress bar."""
    import uuid

    from rich.console import Console
    from rich.progress import Progress

    from app.datasets import repository as datasets
    from app.datasets.export import iter_lines

    if format not in ("jsonl", "openai") or split not in ("train", "eval", "all"):
        typer.echo("--format must be jsonl or openai; --split train, eval or all", err=True)
        raise typer.Exit(2)
    try:
        key = uuid.UUID(dataset_id)
    except ValueError:
        typer.echo(f"not a dataset id: {dataset_id}", err=True)
        raise typer.Exit(2) from None
    selected = None if split == "all" else split
    db = _session()
    try:
        with db.sessionmaker() as session:
            if datasets.get(session, key) is None:
                typer.echo(f"no dataset {dataset_id}", err=True)
                raise typer.Exit(1)
            total = datasets.count_items(session, key, selected)
            partial = out.with_name(out.name + ".partial")
            with partial.open("wb") as fh, Progress(console=Console(stderr=True), transient=True) as progress:
                task = progress.add_task(f"exporting {split}", total=total)
                for line in iter_lines(session, key, format, selected):
                    fh.write(line)
                    progress.advance(task)
            partial.replace(out)  # a finished file or none: never a truncated one
    finally:
        db.dispose()
    typer.echo(f"wrote {total} records to {out}", err=True)


@masks_cli.command("show")
def masks_show(
    tokenizer: Annotated[str, typer.Option(help="Student tokenizer: a local path (or hub id when online).")],
    trajectory_id: Annotated[str | None, typer.Option("--id", help="A stored trajectory id.")] = None,
    file: Annotated[Path | None, typer.Option(help="A JSON file: a request body or a dataset record.")] = None,
    max_seq_len: Annotated[int, typer.Option(help="Truncation length.")] = 4096,
    color: Annotated[bool, typer.Option(help="Colour tokens by kind.")] = True,
) -> None:
    """Print a trajectory's tokens coloured by kind (reason, action, none) as training will see them."""
    from worker.training.inspect import load_for_masks, show_masks

    if (trajectory_id is None) == (file is None):
        typer.echo("give exactly one of --id or --file", err=True)
        raise typer.Exit(2)
    messages, spans, tools = load_for_masks(trajectory_id=trajectory_id, file=file,
                                            database_url=_database_url if trajectory_id else None)
    sys.stdout.write(show_masks(messages, spans, tools, tokenizer, max_seq_len=max_seq_len, color=color) + "\n")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
