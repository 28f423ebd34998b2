"""``GET /v1/workers``: the worker registry (scope ``operate``).

A worker is ``alive`` when its heartbeat is newer than three leases (``worker_lease_seconds`` of the
API's settings; give workers and the API the same value). Rows of killed workers stay until a
starting worker prunes them (after ten leases, at least an hour), so a crash stays visible for a while.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from app.db import SessionDep
from app.jobs import repository as repo
from app.jobs.responses import WorkerPage
from app.jobs.routes import Operator
from app.routing import CheckedRoute

router = APIRouter(prefix="/v1/workers", tags=["workers"], route_class=CheckedRoute)


@router.get("", response_model=WorkerPage)
def list_workers(request: Request, session: SessionDep, _: Operator,
                 alive: Annotated[bool | None, Query(description="Only live (true) or silent (false) ones.")] = None
                 ) -> Any:
    """Each worker: host, pid, devices, job kinds, current job (and its status), last heartbeat, alive."""
    rows = repo.list_workers(session, request.app.state.settings.worker_lease_seconds, alive)
    return {"items": [dict(r._mapping) for r in rows]}
