"""``/healthz`` (process alive), ``/readyz`` (database reachable) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.errors import ServiceUnavailable
from app.observability import DB_UP, REGISTRY

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    try:
        await run_in_threadpool(request.app.state.db.ping)
    except Exception as exc:
        DB_UP.set(0)
        raise ServiceUnavailable(f"The database is not reachable ({exc.__class__.__name__}).") from None
    DB_UP.set(1)
    return {"status": "ready"}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text."}})
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
