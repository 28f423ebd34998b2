"""``create_app()``: settings, database, routers, middleware, error handling and OpenAPI."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi

from app import health, idempotency
from app.annotations.routes import router as annotations_router
from app.auth import KeyCache
from app.config import Settings, get_settings
from app.datasets.routes import router as datasets_router
from app.db import Database, open_session
from app.docs import install_docs
from app.embedded import resolve_database_url
from app.errors import install_error_handlers
from app.jobs.routes import openapi_components as jobs_openapi_components
from app.jobs.routes import router as jobs_router
from app.jobs.workers import router as workers_router
from app.keys.routes import router as keys_router
from app.limits import Limiter
from app.notify import JOB_EVENTS_CHANNEL, KEYS_CHANNEL, Handler, JobWaiters, Listener
from app.observability import ObservabilityMiddleware
from app.openapi import document_problems
from app.traces.routes import router as traces_router
from app.trajectories.routes import router as trajectories_router
from app.trajectories.schemas import TrajectoryCreate
from app.web.routes import install_web

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, database: Database | None = None,
               migrate: bool = True) -> FastAPI:
    """Build the API. Without ``database``, connect to the configured URL (or the embedded server)
    and, with ``migrate``, bring the schema to head first."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "db", None) is None:
            url = resolve_database_url(settings.database_url, settings.pgdata_dir)
            if migrate:
                from app.migrate import upgrade

                upgrade(url)
            app.state.db = Database(url, settings)
            log.info("database ready", extra={"embedded": settings.database_url is None})
        listener = Listener(app.state.db.url, {
            KEYS_CHANNEL: Handler(app.state.key_cache.evict_key_id, app.state.key_cache.clear),
            JOB_EVENTS_CHANNEL: Handler(app.state.job_waiters.notify, app.state.job_waiters.wake_all),
        })
        listener.start()
        app.state.listener = listener
        purger = asyncio.create_task(_purge_idempotency(app))
        # Request handling allocates many short-lived dicts (parsed payloads); with the default
        # thresholds the cyclic GC runs every few requests and its full passes show up in p99.
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        try:
            yield
        finally:
            purger.cancel()
            listener.stop()
            if database is None:
                app.state.db.dispose()

    app = FastAPI(
        title="Distillery",
        version="0.1.0",
        summary="Agent trajectories in, span-level distilled students out.",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs (no CDN)
        redoc_url=None,  # ReDoc has no offline bundle here; /docs is the reference
    )
    app.state.settings = settings
    app.state.db = database
    app.state.key_cache = KeyCache()
    app.state.limiter = Limiter(settings)
    app.state.job_waiters = JobWaiters()
    install_error_handlers(app)
    install_docs(app)
    app.include_router(health.router)
    app.include_router(keys_router)
    app.include_router(trajectories_router)
    app.include_router(traces_router)
    app.include_router(annotations_router)
    app.include_router(datasets_router)
    app.include_router(jobs_router)
    app.include_router(workers_router)
    install_web(app)

    batch_paths = ("/v1/trajectories/batch",)

    def body_limit(path: str) -> int:
        return settings.max_batch_request_bytes if path in batch_paths else settings.max_request_bytes

    app.add_middleware(ObservabilityMiddleware, body_limit=body_limit,
                       body_timeout=settings.request_body_timeout_seconds)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            extra = TrajectoryCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(extra.pop("$defs", {}))
            components["TrajectoryCreate"] = extra
            components.update(jobs_openapi_components())
            document_problems(schema)
            schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _purge_idempotency(app: FastAPI) -> None:
    """Delete expired Idempotency-Key records now and then (they are ignored once expired anyway)."""
    settings: Settings = app.state.settings
    while True:
        await asyncio.sleep(settings.idempotency_purge_seconds)
        try:
            def purge() -> int:
                with open_session(app) as session:
                    return idempotency.purge(session, settings.idempotency_ttl_seconds)

            await run_in_threadpool(purge)
        except Exception as exc:  # the database is away: next time
            log.warning("idempotency purge failed", extra={"error_class": type(exc).__name__})


def create_worker_process_app() -> FastAPI:
    """Factory for ``distillery serve --workers N``: the parent has migrated already."""
    from app.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings, migrate=False)
