"""Dataset export: the records as JSON lines, streamed in constant memory.

Two shapes, one JSON object per line:

- ``jsonl``: the dataset record (``contract.spans.DatasetRecord``): ``{id, messages, spans, tools,
  complexity, split, source, task_type, outcome, reward, teacher_model, span_revision}`` with
  canonical messages and the pinned spans, exactly as the trainer consumes it.
- ``openai``: the chat fine-tuning shape that OpenAI fine-tuning and TRL's SFTTrainer read:
  ``{"messages": [{role, content, tool_calls?, tool_call_id?, weight?}], "tools"?}``. An
  assistant message whose canonical text ends with its rendered Hermes tool-call blocks gets its
  ``tool_calls`` back in OpenAI shape (``arguments`` as a JSON string) and ``content`` = the free
  text before the blocks (null when there is none). A tool message keeps ``tool_call_id`` when it
  answers a call emitted earlier in the conversation. An assistant message holding no reason or
  action span gets ``"weight": 0`` (never trained); the per-message weight cannot express masks
  inside a message, so those live only in the ``jsonl`` export.

Rows are read through a server-side cursor (``records.iter_records``) and written in chunks of
about ``CHUNK_BYTES``, so memory does not grow with the dataset.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy.orm import Session

from app.datasets import records
from contract.formats.base import export_arguments
from contract.formats.openai import split_calls
from contract.spans import SUPERVISED_KINDS, DatasetRecord

CHUNK_BYTES = 64 * 1024


def openai_record(record: DatasetRecord) -> dict[str, Any]:
    """One dataset record in the OpenAI / TRL chat fine-tuning shape."""
    supervised = {s["message"] for s in record["spans"] if s["kind"] in SUPERVISED_KINDS}
    emitted: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(record["messages"]):
        role = msg["role"]
        if role != "assistant":
            item: dict[str, Any] = {"role": role, "content": msg["text"]}
            if role == "tool" and msg.get("tool_call_id") in emitted:
                item["tool_call_id"] = msg["tool_call_id"]
            out.append(item)
            continue
        free, calls = split_calls(msg)
        item = {"role": "assistant", "content": free if free or not calls else None}
        if calls:
            item["tool_calls"] = []
            for n, call in enumerate(calls):
                call_id = call["id"] if call["id"] is not None else f"call_{i}_{n}"
                emitted.add(call_id)
                item["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": call["name"], "arguments": export_arguments(call["arguments"])}})
        if i not in supervised:
            item["weight"] = 0
        out.append(item)
    result: dict[str, Any] = {"messages": out}
    if record["tools"] is not None:
        result["tools"] = record["tools"]
    return result


def iter_lines(session: Session, dataset_id: uuid.UUID, fmt: str, split: str | None) -> Iterator[bytes]:
    """One serialized line (with its newline) per record, in dataset order."""
    for record in records.iter_records(session, dataset_id, split):
        yield orjson.dumps(openai_record(record) if fmt == "openai" else record) + b"\n"


def iter_export(session: Session, dataset_id: uuid.UUID, fmt: str, split: str | None) -> Iterator[bytes]:
    """The export as chunks of about ``CHUNK_BYTES`` (whole lines)."""
    buffer: list[bytes] = []
    size = 0
    for line in iter_lines(session, dataset_id, fmt, split):
        buffer.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)
