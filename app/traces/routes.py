"""``/v1/traces``: OTLP/HTTP trace export in (any OpenTelemetry-instrumented agent), and any stored
trajectory out as an OTLP trace."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from app import body as request_body
from app.auth import Ingest, Principal, Reader
from app.db import SessionDep, open_session
from app.observability import TRAJECTORIES_INGESTED
from app.routing import CheckedRoute
from app.traces import codec, service
from app.trajectories import service as trajectories
from contract.formats.otlp import export_trace

router = APIRouter(prefix="/v1/traces", tags=["traces"], route_class=CheckedRoute)


def _export(data: request_body.Body, request: Request, principal: Principal) -> tuple[bytes, str]:
    settings = request.app.state.settings
    decoded = codec.decode(data, request.headers.get("content-type"), request.headers.get("content-encoding"),
                           settings.max_request_bytes)
    with open_session(request.app) as session:  # committed before the answer leaves
        result = service.ingest_export(session, decoded.value, settings, principal)
    for kind, n in (("created", result.stored), ("replayed", result.unchanged), ("rejected", len(result.errors))):
        if n:
            TRAJECTORIES_INGESTED.labels(format="otlp", result=kind).inc(n)
    return codec.response(result.rejected_spans, result.error_message(), decoded.protobuf)


@router.post(
    "", response_class=Response,
    responses={200: {"description": "ExportTraceServiceResponse (partial_success names rejected spans).",
                     "content": {codec.PROTOBUF: {}, codec.JSON: {}}},
               400: {"description": "Not an ExportTraceServiceRequest."},
               413: {"description": "Body over the byte limit (inflated, for gzip)."},
               415: {"description": "Not protobuf or JSON, or an unsupported Content-Encoding."}},
)
async def export_traces(request: Request, principal: Ingest) -> Response:
    """OTLP/HTTP trace export: an `ExportTraceServiceRequest` as `application/x-protobuf` or
    `application/json` (optionally `Content-Encoding: gzip`). Each trace becomes one trajectory of
    format `otlp` (spans of a trace sent over several requests extend it); the answer is an
    `ExportTraceServiceResponse` in the request's encoding, whose `partial_success` counts the spans
    of traces that were not stored and says why."""
    data = await request_body.read(request)
    content, media_type = await run_in_threadpool(_export, data, request, principal)
    return Response(content, media_type=media_type)


@router.get("/{trajectory_id}", response_model=dict[str, Any])
def export_trajectory_trace(trajectory_id: uuid.UUID, session: SessionDep, _: Reader) -> Any:
    """Any trajectory as an OTLP/JSON `ExportTraceServiceRequest` (one `chat` span with
    `gen_ai.input.messages` / `gen_ai.output.messages`). An `otlp` trajectory posted back to
    `POST /v1/traces` under another source gives the same messages (`content_sha256`) and auto spans;
    other formats keep their texts but not what only their own format carries."""
    row = trajectories.get_or_404(session, trajectory_id)
    return export_trace(row.messages, row.tools, source=row.source, external_id=row.external_id,
                        teacher_model=row.teacher_model, task=row.task, task_type=row.task_type,
                        outcome=row.outcome, reward=row.reward, tags=row.tags)
