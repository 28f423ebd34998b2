"""``distillery keys …``: create, list and revoke API keys, straight in the database (run on the server)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

keys_cli = typer.Typer(help="API keys (run on the server; talks to the database directly).", no_args_is_help=True)


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who uses the key.")],
    scopes: Annotated[list[str], typer.Option("--scopes", help="ingest, annotate, curate, operate, admin")],
    sources: Annotated[list[str] | None, typer.Option(
        "--sources", help="Bind the key to these sources (comma-separated): it may post and read only their "
        "trajectories. Default: any source.")] = None,
) -> None:
    """Create an API key and print it (shown once)."""
    from app.auth import SCOPES, create_key
    from cli.database import open_database

    flat = [s.strip() for item in scopes for s in item.split(",") if s.strip()]
    bad = sorted(set(flat) - set(SCOPES))
    if bad or not flat:
        typer.echo(f"unknown scopes: {', '.join(bad) or '(none given)'}; choose from {', '.join(SCOPES)}", err=True)
        raise typer.Exit(2)
    db = open_database()
    with db.sessionmaker.begin() as session:
        bound = [s.strip() for item in sources for s in item.split(",") if s.strip()] if sources else None
        row, key = create_key(session, name, flat, bound)
        typer.echo(json.dumps({"id": str(row.id), "name": name, "scopes": row.scopes, "sources": row.sources,
                               "key": key}))
    db.dispose()


@keys_cli.command("list")
def keys_list() -> None:
    """List API keys (never the secrets)."""
    from sqlalchemy import select

    from app.models import ApiKey
    from cli.database import open_database

    db = open_database()
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
    from cli.database import open_database

    db = open_database()
    with db.sessionmaker.begin() as session:
        row = session.get(ApiKey, uuid.UUID(key_id))
        if row is None:
            typer.echo(f"no key {key_id}", err=True)
            raise typer.Exit(1)
        row.revoked_at = row.revoked_at or datetime.now(UTC)
    typer.echo(f"revoked {key_id}")
    db.dispose()
