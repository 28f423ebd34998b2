"""``distillery masks show``: load a trajectory (from the database or a JSON file) and print its
tokens coloured by the kind training will give them, through the student's own tokenizer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.training.masks_view import format_masks
from worker.training.render import render_trajectory


def _from_file(file: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    """A dataset record ({messages: canonical, spans}) or a POST /v1/trajectories request body."""
    data = json.loads(file.read_text())
    messages = data.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict) and "text" in messages[0]:
        return messages, data.get("spans") or [], data.get("tools")
    from contract.formats import parse
    from contract.spans import validate_spans

    parsed = parse(data["format"], {k: v for k, v in data.items() if k != "spans"})
    spans = data.get("spans") or parsed.spans
    errors = validate_spans(parsed.messages, spans)
    if errors:
        raise ValueError(f"invalid spans: {errors[0]['field']}: {errors[0]['message']}")
    return parsed.messages, spans, parsed.tools


def _from_database(trajectory_id: str, database_url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any]:
    from app.config import get_settings
    from app.db import Database
    from app.trajectories import repository

    db = Database(database_url, get_settings())
    try:
        with db.sessionmaker() as session:
            row = repository.get(session, uuid.UUID(trajectory_id))
            if row is None:
                raise ValueError(f"no trajectory {trajectory_id}")
            return row.messages, repository.current_spans(session, row.id, row.span_revision), row.tools
    finally:
        db.dispose()


Loaded = tuple[list[dict[str, Any]], list[dict[str, Any]], Any]  # messages, spans, tools


def load_for_masks(*, trajectory_id: str | None = None, file: Path | None = None,
                   database_url: Callable[[], str] | None = None) -> Loaded:
    if file is not None:
        return _from_file(file)
    assert trajectory_id is not None and database_url is not None
    return _from_database(trajectory_id, database_url())


def show_masks(messages: list[dict[str, Any]], spans: list[dict[str, Any]], tools: Any, tokenizer: str, *,
               max_seq_len: int = 4096, color: bool = True) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    example = render_trajectory(messages, spans, tok, max_seq_len=max_seq_len, tools=tools)
    if example is None:
        return "(no supervised tokens: nothing of this trajectory would be trained)"
    return format_masks(example, tok, color=color)
