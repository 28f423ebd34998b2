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

The API streams an export page by page (``read_page``): each page of ``PAGE_RECORDS`` records is
read in a short transaction of its own, so a stream holds no database connection while it waits
for the client, and a client that goes away (or never reads) holds nothing at all. The pages of a
snapshot never change (datasets are immutable); if the dataset is deleted during its export, the
stream is cut off without its final chunk, which HTTP clients report as an incomplete body.
``iter_export`` (one session, a server-side cursor, chunks of about ``CHUNK_BYTES``) serves the CLI.
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
PAGE_RECORDS = 128


class DatasetGone(RuntimeError):
    """The dataset was deleted while it was being exported."""


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


def _line(record: DatasetRecord, fmt: str) -> bytes:
    return orjson.dumps(openai_record(record) if fmt == "openai" else record) + b"\n"


def read_page(session: Session, dataset_id: uuid.UUID, fmt: str, split: str | None, after_position: int
              ) -> tuple[bytes, int, bool]:
    """The serialized lines of the next page after ``after_position``: (bytes, last position, finished)."""
    page = records.read_page(session, dataset_id, split, after_position, PAGE_RECORDS)
    if len(page) < PAGE_RECORDS and records.get(session, dataset_id) is None:
        raise DatasetGone(str(dataset_id))
    data = b"".join(_line(record, fmt) for _, record in page)
    return data, page[-1][0] if page else after_position, len(page) < PAGE_RECORDS


def iter_lines(session: Session, dataset_id: uuid.UUID, fmt: str, split: str | None) -> Iterator[bytes]:
    """One serialized line (with its newline) per record, in dataset order."""
    for record in records.iter_records(session, dataset_id, split):
        yield _line(record, fmt)


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
