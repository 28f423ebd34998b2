"""Request and response shapes for ``/v1/trajectories``.

The request is the envelope (source, ids, outcome, tags, metadata, optional client spans) plus
the format's own top-level fields exactly as the source tools write them: ``messages`` (+
``tools``) for openai and smolagents, ``text`` for react, ``conversations`` (+ ``system``,
``tools``) for sharegpt, ``messages`` (+ ``system``, ``tools``) for anthropic, ``input`` /
``output`` (+ ``instructions``, ``tools``) for openai-responses. Their inner shape is checked by the
format parsers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from contract.formats import FORMATS
from contract.spans import KINDS

Format = Literal["openai", "react", "smolagents", "sharegpt", "anthropic", "openai-responses", "swe-agent",
                 "otlp"]
Outcome = Literal["success", "failure", "unknown"]
Status = Literal["pending", "in_review", "approved", "rejected"]
# contract.spans.SpanKind spelled as a Literal for pydantic: the OpenAPI schema keeps an inline enum and a
# bad kind keeps the error code clients see ("literal_error"). Checked against the enum below.
KindName = Literal["reason", "action", "observation"]
if get_args(KindName) != KINDS or get_args(Format) != FORMATS:
    raise RuntimeError("app.trajectories.schemas is out of step with contract.spans.SpanKind or contract.formats")


class SpanModel(BaseModel):
    message: int = Field(ge=0, description="Index into messages.")
    start: int = Field(ge=0, description="Code-point offset into the message text (inclusive).")
    end: int = Field(ge=1, description="Code-point offset (exclusive); start < end.")
    kind: KindName


class TrajectoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "format": "openai", "source": "support-agent", "external_id": "run-42",
        "teacher_model": "gpt-4o", "task": "Weather in NYC?", "task_type": "weather",
        "outcome": "success", "reward": 1.0, "tags": ["prod"], "metadata": {"latency_ms": 812},
        "messages": [
            {"role": "user", "content": "Weather in NYC?"},
            {"role": "assistant", "content": "I should look it up.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"NYC\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 21}"},
            {"role": "assistant", "content": "It is 21°C."}],
    }]})

    format: Format
    source: str = Field(min_length=1, max_length=200, description="Which agent or system sent it.")
    external_id: str | None = Field(None, min_length=1, max_length=500,
                                    description="The sender's own id; unique per source (idempotency).")
    teacher_model: str | None = Field(None, max_length=500)
    task: str | None = Field(None, max_length=100_000, description="The task text (react: the question).")
    task_type: str | None = Field(None, max_length=200, description="e.g. hotpotqa")
    outcome: Outcome = "unknown"
    reward: float | None = Field(None, allow_inf_nan=False)
    tags: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, description="Each at most 200 characters (tags are indexed).")
    metadata: dict[str, Any] = Field(default_factory=dict)
    spans: list[dict[str, Any]] | None = Field(
        None, description="Client spans {message, start, end, kind}; when absent the segmenter proposes them.")
    # Format-specific fields, exactly as the source tools write them.
    messages: list[Any] | None = Field(None, description="openai chat messages / smolagents step log.")
    tools: Any | None = Field(None, description="Tool definitions (openai: JSON schema; sharegpt: JSON string).")
    text: str | None = Field(None, description="react: the ReAct transcript.")
    conversations: list[Any] | None = Field(None, description="sharegpt turns {from, value, loss?}.")
    system: str | list[Any] | None = Field(
        None, description="sharegpt: the system prompt; anthropic: a string or text blocks.")
    instructions: str | None = Field(None, description="openai-responses: the system prompt.")
    input: str | list[Any] | None = Field(None, description="openai-responses: the request's input items.")
    output: list[Any] | None = Field(None, description="openai-responses: the response's output items.")
    history: list[Any] | None = Field(None, description="swe-agent: the .traj file's history.")
    trajectory: list[Any] | None = Field(None, description="swe-agent: the .traj file's trajectory steps.")
    info: dict[str, Any] | None = Field(None, description="swe-agent: the .traj file's info (kept, not read).")
    environment: str | None = Field(None, description="swe-agent: the .traj file's environment (kept, not read).")
    replay_config: Any | None = Field(None, description="swe-agent: the .traj file's replay_config (kept, not read).")
    observation_role: Literal["user"] | None = Field(
        None, description='"user": the user turns after the first assistant turn feed observations back '
                          "(text-command agents such as mini-swe-agent); they get observation spans.")


class TrajectoryReceipt(BaseModel):
    id: uuid.UUID
    source: str
    external_id: str | None
    created: bool = Field(description="False when this was a replay of an already stored trajectory.")
    span_revision: int
    n_messages: int
    n_spans: int
    content_sha256: str
    sanitized: int = Field(0, description="Characters of never-trained text (tool output, observations) "
                                          "that could not be stored (NUL, lone surrogates) and were "
                                          "replaced by U+FFFD; 0 when none.")


class BatchItemResult(BaseModel):
    index: int
    status: int = Field(description="HTTP status this item would have had alone (201, 200, 409, 413, 422).")
    id: uuid.UUID | None = None
    created: bool | None = None
    sanitized: int | None = Field(None, description="As in the single receipt; absent for a failed item.")
    error: dict[str, Any] | None = Field(None, description="problem+json body for a failed item.")


class BatchResult(BaseModel):
    created: int
    replayed: int
    failed: int
    items: list[BatchItemResult]


class TrajectorySummary(BaseModel):
    id: uuid.UUID
    source: str
    external_id: str | None
    format: str
    teacher_model: str | None
    task_type: str | None
    outcome: str
    reward: float | None
    tags: list[str]
    status: str
    span_revision: int
    n_messages: int
    complexity: dict[str, Any]
    created_at: datetime


class TrajectoryRead(TrajectorySummary):
    task: str | None
    metadata: dict[str, Any]
    messages: list[dict[str, Any]]
    tools: Any | None
    spans: list[SpanModel]
    content_sha256: str
    updated_at: datetime
    raw: dict[str, Any] | None = Field(None, description="The payload as received (include_raw=true).")


class TrajectoryPage(BaseModel):
    items: list[TrajectorySummary]
    next_cursor: str | None
