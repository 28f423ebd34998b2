"""The real OpenTelemetry SDK and its OTLP/HTTP protobuf exporter, pointed at a live server, as an
instrumented agent would be: spans exported one request per span (the root last) and in batches."""

from __future__ import annotations

import json

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.app.live import live_server
from tests.conftest import ADMIN_KEY

SYSTEM = [{"type": "text", "content": "You are a weather bot."}]
USER = {"role": "user", "parts": [{"type": "text", "content": "Weather in Oslo?"}]}
CALL = {"role": "assistant", "parts": [{"type": "reasoning", "content": "Look it up."},
                                       {"type": "tool_call", "id": "call_7", "name": "weather",
                                        "arguments": {"city": "Oslo"}}]}
RESULT = {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_7", "response": "-3°C, snow"}]}
ANSWER = {"role": "assistant", "parts": [{"type": "text", "content": "Snowy, -3°C."}]}


def _run_agent(provider: TracerProvider) -> str:
    """What a GenAI-instrumented agent records: an agent span around two chat calls and a tool call."""
    tracer = provider.get_tracer("test-agent")
    with tracer.start_as_current_span("invoke_agent weather", attributes={
            "gen_ai.operation.name": "invoke_agent", "distillery.outcome": "success"}) as root:
        for inputs, outputs in (([USER], [CALL]), ([USER, CALL, RESULT], [ANSWER])):
            with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o", "gen_ai.system_instructions": json.dumps(SYSTEM),
                    "gen_ai.input.messages": json.dumps(inputs), "gen_ai.output.messages": json.dumps(outputs)}):
                pass
            if outputs == [CALL]:
                with tracer.start_as_current_span("execute_tool weather", attributes={
                        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.id": "call_7"}):
                    pass
        return format(root.get_span_context().trace_id, "032x")


def _provider(url: str, service: str, *, batch: bool) -> TracerProvider:
    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider


def test_real_exporter_one_request_per_span_and_batched(committed_app, committed_client):
    with live_server(committed_app) as url:
        trace_ids = {}
        for service, batch in (("oslo-simple", False), ("oslo-batch", True)):
            provider = _provider(url, service, batch=batch)
            trace_ids[service] = _run_agent(provider)
            assert provider.force_flush()
            provider.shutdown()
        for service, trace_id in trace_ids.items():
            items = committed_client.get("/v1/trajectories", params={"source": service}).json()["items"]
            assert [i["external_id"] for i in items] == [trace_id], service
            t = committed_client.get(f"/v1/trajectories/{items[0]['id']}").json()
            assert [m["role"] for m in t["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
            assert t["messages"][2]["text"].startswith("<think>\nLook it up.\n</think>\n<tool_call>")
            assert t["outcome"] == "success" and t["metadata"]["otlp"]["complete"] is True
            assert t["metadata"]["otlp"]["spans"] == 4  # agent, two chats, one tool call
        one = committed_client.get("/v1/trajectories", params={"source": "oslo-simple"}).json()["items"][0]
        other = committed_client.get("/v1/trajectories", params={"source": "oslo-batch"}).json()["items"][0]
        assert one["complexity"] == other["complexity"]


def test_real_exporter_sees_partial_success_as_delivered(committed_app, committed_client):
    """A trace with no GenAI content is refused in `partial_success`, which the exporter does not retry."""
    memory = InMemorySpanExporter()
    source = TracerProvider(resource=Resource.create({"service.name": "plain"}))
    source.add_span_processor(SimpleSpanProcessor(memory))
    with source.get_tracer("t").start_as_current_span("GET /health"):
        pass
    with live_server(committed_app) as url:
        exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert exporter.export(list(memory.get_finished_spans())) == SpanExportResult.SUCCESS
        bad_key = OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": "Bearer nope"})
        assert bad_key.export(list(memory.get_finished_spans())) == SpanExportResult.FAILURE
    assert committed_client.get("/v1/trajectories", params={"source": "plain"}).json()["items"] == []
