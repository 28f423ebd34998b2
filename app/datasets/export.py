"""Dataset export: the records as JSON lines, streamed in constant memory.

Two shapes, one JSON object per line:

- ``jsonl``: the dataset record (``contract.spans.DatasetRecord``): ``{id, messages, spans, tools,
  complexity, split, source, task_type, outcome, reward, teacher_model, span_revision}`` with
  canonical messages and the pinned spans, exactly as the trainer consumes it.
- ``openai``: the chat fine-tuning shape that OpenAI fine-tuning and TRL's SFTTrainer read:
  ``{"messages": [{role, content, tool_calls?, tool_call_id?, weight?}], "tools"?}``, made to pass
  OpenAI's fine-tuning file checks. An assistant message whose tool calls are rendered in its text
  gets them back in OpenAI shape, read from the stored structure (``contract.formats.base.split_calls``:
  arguments in the order received, never rebuilt by comparing strings), ``arguments`` always a JSON
  string (as received when it was one; a value that is not JSON becomes a JSON string literal), and
  ``content`` = the free text before the calls (null when there is none); a turn whose calls are
  interleaved with its reasoning or text (anthropic blocks, openai-responses items) gets all of them,
  and its other pieces, in order, as the ``content`` (the chat shape puts every call after the
  content; ``parts`` locates each piece, so nothing is found by searching); a call without an id gets
  ``call_<message>_<n>``, and an id already used in the line is renamed the same way. A tool message
  answers a pending call of the assistant message just before it (its own ``tool_call_id``, or the
  next unanswered call when it has none, as ShareGPT observations do); a tool message that answers no
  call (ReAct observations, smolagents tool responses, a stray one) becomes a ``user`` message with
  the same content. Empty system, user and assistant messages are left out (OpenAI refuses empty
  content; they carry nothing to learn). An assistant message holding no reason or action span gets
  ``"weight": 0`` (never trained); the per-message weight cannot express masks inside a message, so
  those live only in the ``jsonl`` export. ``tools`` are written in the chat shape
  (``contract.formats.parts.chat_tools``: Anthropic and Responses definitions rewritten, server tools left out).

The API streams an export page by page (``read_page``): each page of ``PAGE_RECORDS`` records is
read in a short transaction of its own, so a stream holds no database connection while it waits
for the client, and a client that goes away (or never reads) holds nothing at all. The pages of a
snapshot never change (datasets are immutable); if the dataset is deleted during its export, the
stream is cut off without its final chunk, which HTTP clients report as an incomplete body.
``iter_export`` (one session, a server-side cursor, chunks of about ``CHUNK_BYTES``) serves the CLI.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from sqlalchemy.orm import Session

from app.datasets import records
from contract.formats import anthropic, responses
from contract.formats.base import split_calls
from contract.formats.jsonvalue import try_json
from contract.formats.parts import CALL, TEXT, Piece, assistant_message, block_arguments, chat_tools, split_turn
from contract.spans import SUPERVISED_KINDS, DatasetRecord, Message, ToolCall

CHUNK_BYTES = 64 * 1024
PAGE_RECORDS = 128


class DatasetGone(RuntimeError):
    """The dataset was deleted while it was being exported."""


def openai_arguments_json(call: ToolCall) -> str:
    """A call's ``arguments`` as the JSON string OpenAI expects (see the module docstring)."""
    raw = call.get("raw_arguments")
    if raw is not None and try_json(raw)[0]:
        return raw
    value = call["arguments"]
    if isinstance(value, str) and try_json(value)[0]:
        return value
    return json.dumps(value, ensure_ascii=False)


def _free_and_calls(msg: Message) -> tuple[str, list[ToolCall]]:
    """(free text, calls) of an assistant message for the chat shape, which holds the calls after the
    content: ``split_calls``, and for a turn whose calls are interleaved with its reasoning or text
    (anthropic blocks, openai-responses items, which have no ``calls_at``) every call read from its
    block by walking ``parts`` over the text, and the rest of the turn, in order, as the free text."""
    free, calls = split_calls(msg)
    stored, parts = msg.get("tool_calls") or [], msg.get("parts")
    if calls or not stored or not isinstance(parts, list):
        return free, calls
    for kinds in (anthropic.part_kinds(parts), responses.part_kinds(parts)):
        texts = split_turn(msg["text"], parts, kinds)
        if texts is None or kinds.count(CALL) != len(stored):
            continue
        pending = iter(stored)
        rest: list[Piece] = []
        found: list[ToolCall] = []
        for kind, text in zip(kinds, texts, strict=True):
            if kind != CALL:
                rest.append(Piece(kind or TEXT, text, {}))
                continue
            call = next(pending)
            item: ToolCall = {"id": call["id"], "name": call["name"], "arguments": block_arguments(text, call)}
            if "raw_arguments" in call:
                item["raw_arguments"] = call["raw_arguments"]
            found.append(item)
        free = assistant_message(rest, [])[0]["text"]  # the turn as rendered, less its calls
        return (free[:-1] if free.endswith("\n") else free), found
    return free, calls


def openai_record(record: DatasetRecord) -> dict[str, Any]:
    """One dataset record in the OpenAI / TRL chat fine-tuning shape."""
    supervised = {s["message"] for s in record["spans"] if s["kind"] in SUPERVISED_KINDS}
    used: set[str] = set()
    pending: list[tuple[str | None, str]] = []  # (stored id, id in the line) of calls not answered yet
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(record["messages"]):
        role, text = msg["role"], msg["text"]
        if role == "tool":
            wanted = msg.get("tool_call_id")
            match = next((p for p in pending if wanted is None or p[0] == wanted), None)
            if match is None:
                out.append({"role": "user", "content": text})
            else:
                pending.remove(match)
                out.append({"role": "tool", "content": text, "tool_call_id": match[1]})
            continue
        pending = []
        if role != "assistant":
            if text:
                out.append({"role": role, "content": text})
            continue
        free, calls = _free_and_calls(msg)
        if not free and not calls:
            continue
        item: dict[str, Any] = {"role": "assistant", "content": free or None}
        if calls:
            item["tool_calls"] = []
            for n, call in enumerate(calls):
                call_id = call["id"] if call["id"] is not None and call["id"] not in used else f"call_{i}_{n}"
                while call_id in used:
                    call_id += "_"
                used.add(call_id)
                pending.append((call["id"], call_id))
                item["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": call["name"], "arguments": openai_arguments_json(call)}})
        if i not in supervised:
            item["weight"] = 0
        out.append(item)
    result: dict[str, Any] = {"messages": out}
    tools = chat_tools(record["tools"])  # Anthropic / Responses definitions in the chat shape
    if tools:
        result["tools"] = tools
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
