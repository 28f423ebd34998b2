"""``distillery masks show``: load a trajectory (a stored one, or a JSON file) and print its tokens
marked with the kind training gives them.

Loading is the CLI's job: a stored trajectory comes through app's public repository, a file through
the contract's format parsers and span validation. Rendering is the worker's: the student tokenizer,
the chat template and the masks (``worker.training.inspect``, imported only when the command runs, so
torch loads for this command alone).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from contract.spans import Message, Span

masks_cli = typer.Typer(help="Inspect how a trajectory is rendered and masked for training.", no_args_is_help=True)


class Loaded(NamedTuple):
    """A trajectory as training renders it: canonical messages, the span set, the tool definitions."""

    messages: list[Message]
    spans: list[Span]
    tools: list[Any] | None


def load_file(file: Path) -> Loaded:
    """A dataset record (``{messages: canonical, spans}``) or a ``POST /v1/trajectories`` request body;
    a body's own spans (else its auto spans) are validated like the API does."""
    from contract.formats import parse
    from contract.spans import validate_spans

    data = json.loads(file.read_text())
    messages = data.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict) and "text" in messages[0]:
        return Loaded(messages, data.get("spans") or [], data.get("tools"))
    parsed = parse(data["format"], {k: v for k, v in data.items() if k != "spans"})
    spans = data.get("spans") or parsed.spans
    errors = validate_spans(parsed.messages, spans)
    if errors:
        raise ValueError(f"invalid spans: {errors[0]['field']}: {errors[0]['message']}")
    return Loaded(parsed.messages, spans, parsed.tools)


def load_stored(trajectory_id: str) -> Loaded:
    """A stored trajectory's canonical messages, its current span revision and its tools."""
    from app.trajectories import repository
    from cli.database import open_database

    db = open_database(migrate=False)
    try:
        with db.sessionmaker() as session:
            row = repository.get(session, uuid.UUID(trajectory_id))
            if row is None:
                raise ValueError(f"no trajectory {trajectory_id}")
            return Loaded(row.messages, repository.current_spans(session, row.id, row.span_revision), row.tools)
    finally:
        db.dispose()


@masks_cli.command("show")
def masks_show(
    tokenizer: Annotated[str, typer.Option(help="Student tokenizer: a local path (or hub id when online).")],
    trajectory_id: Annotated[str | None, typer.Option("--id", help="A stored trajectory id.")] = None,
    file: Annotated[Path | None, typer.Option(help="A JSON file: a request body or a dataset record.")] = None,
    max_seq_len: Annotated[int, typer.Option(help="Truncation length.")] = 4096,
    color: Annotated[bool, typer.Option(help="Colour tokens by kind.")] = True,
    tool_call_syntax: Annotated[str, typer.Option(
        help="native: tool calls in the chat template's own syntax (training's default); hermes: canonical text.")
    ] = "native",
) -> None:
    """Print a trajectory's tokens coloured by kind (reason, action, none) as training will see them."""
    if (trajectory_id is None) == (file is None):
        typer.echo("give exactly one of --id or --file", err=True)
        raise typer.Exit(2)
    if tool_call_syntax not in ("native", "hermes"):
        typer.echo("--tool-call-syntax must be native or hermes", err=True)
        raise typer.Exit(2)
    loaded = load_file(file) if file is not None else load_stored(str(trajectory_id))
    from worker.training.inspect import show_masks

    text = show_masks(loaded.messages, loaded.spans, loaded.tools, tokenizer, max_seq_len=max_seq_len, color=color,
                      syntax="hermes" if tool_call_syntax == "hermes" else "native")
    sys.stdout.write(text + "\n")
