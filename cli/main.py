"""The ``distillery`` command line: serve the API, run a worker, migrate; ``demo`` and the command groups
(keys, masks, jobs, datasets, models) live in their own modules and are wired here.

Every command imports what it needs when it runs: ``--help`` and the HTTP-only ``jobs`` commands load
neither SQLAlchemy nor torch, and only the commands that train, render or build models (``worker``,
``serve --with-worker``, ``masks show``, ``demo``, ``models add|tiny``) load the worker's torch side.
"""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from cli.datasets import datasets_cli
from cli.demo import demo
from cli.jobs import jobs_cli
from cli.keys import keys_cli
from cli.masks import masks_cli
from cli.models import models_cli

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

cli = typer.Typer(help="Distillery: agent trajectories in, span-level distilled students out.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
# Registration order is the order ``--help`` lists the groups in.
cli.add_typer(db_cli, name="db")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(masks_cli, name="masks")
cli.add_typer(jobs_cli, name="jobs")
cli.add_typer(datasets_cli, name="datasets")
cli.add_typer(models_cli, name="models")
cli.command("demo")(demo)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    with_worker: Annotated[bool, typer.Option("--with-worker", help="Run a job worker in this process too.")] = False,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API processes (uvicorn workers).")] = 1,
) -> None:
    """Run the API (migrating the database first). Without DISTILLERY_DATABASE_URL an embedded
    Postgres starts in the per-user data folder. SIGTERM or Ctrl-C stops everything: the API, the worker
    (its job handed back, the worker unregistered) and the embedded Postgres."""
    import uvicorn

    from app.config import get_settings
    from app.db import Database
    from app.main import create_app
    from app.migrate import upgrade
    from app.observability import configure_logging
    from app.serving import uvicorn_options
    from cli.database import database_url
    from cli.stack import exit_on_sigterm

    exit_on_sigterm()  # before the embedded Postgres starts: whenever SIGTERM comes, the cleanup runs
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    url = database_url()
    upgrade(url)
    stop_worker = None
    if with_worker:
        from worker.loop import start_background_worker

        stop_worker = start_background_worker(url, settings)
    typer.echo(f"Distillery API on http://{host}:{port}  (docs: http://{host}:{port}/docs)", err=True)
    try:
        if workers == 1:
            app = create_app(settings, database=Database(url, settings))
            uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, **uvicorn_options())
        else:  # each process builds its own app on the already migrated database
            import os

            os.environ["DISTILLERY_DATABASE_URL"] = url
            uvicorn.run("app.main:create_worker_process_app", factory=True, host=host, port=port,
                        workers=workers, log_config=None, access_log=False, **uvicorn_options())
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
    from cli.database import database_url
    from worker.loop import run_worker

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    raise typer.Exit(run_worker(database_url(), settings, once=once))


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from app.migrate import upgrade
    from cli.database import database_url

    upgrade(database_url(), revision)
    typer.echo(f"database at {revision}")


@db_cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument()]) -> None:
    """Revert migrations down to REVISION (``base`` drops everything)."""
    from app.migrate import downgrade
    from cli.database import database_url

    downgrade(database_url(), revision)
    typer.echo(f"database at {revision}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
