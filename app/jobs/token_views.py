"""``GET /v1/jobs/{id}/token-views/{trajectory_id}``: one trajectory's token views from the job's
``token_views.jsonl`` (written by the worker, see ``contract.token_views``).

The file holds the first few hundred trajectories of the job's dataset; the page asks for one, so the
lines are scanned and only those that begin with its id are parsed (the writer puts the id first).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import NotFound
from app.jobs import artifacts
from app.jobs.service import get_or_404
from contract.token_views import TOKEN_VIEWS, line_prefix


def read_views(path: Path, trajectory_id: uuid.UUID) -> list[dict[str, Any]]:
    prefix = line_prefix(str(trajectory_id)).encode()
    found: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for line in fh:
            if line.startswith(prefix):
                found.append(orjson.loads(line))
    return found


def token_views(session: Session, settings: Settings, job_id: uuid.UUID, trajectory_id: uuid.UUID
                ) -> dict[str, Any]:
    """The examples of ``trajectory_id`` as the job's student sees them; 404 ``token_views_not_found`` when
    the job wrote no views (not a distill job, or not started yet) or none for that trajectory."""
    row = get_or_404(session, job_id)
    try:
        path = artifacts.resolve_artifact(settings.job_dir(job_id), TOKEN_VIEWS)
    except NotFound:
        raise NotFound("This job has no token views (not a distill job, or it has not started).",
                       code="token_views_not_found") from None
    examples = read_views(path, trajectory_id)
    if not examples:
        raise NotFound("The job's token views do not hold this trajectory (only the first trajectories of its "
                       "dataset are kept).", code="token_views_not_found")
    return {"job_id": job_id, "trajectory_id": trajectory_id,
            "student_model": (row.config or {}).get("student_model"), "examples": examples}
