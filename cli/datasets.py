"""``distillery datasets export``: a dataset's records to a file, streamed from the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

datasets_cli = typer.Typer(help="Datasets (talks to the database directly).", no_args_is_help=True)


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
    from cli.database import open_database

    if format not in ("jsonl", "openai") or split not in ("train", "eval", "all"):
        typer.echo("--format must be jsonl or openai; --split train, eval or all", err=True)
        raise typer.Exit(2)
    try:
        key = uuid.UUID(dataset_id)
    except ValueError:
        typer.echo(f"not a dataset id: {dataset_id}", err=True)
        raise typer.Exit(2) from None
    selected = None if split == "all" else split
    db = open_database()
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
