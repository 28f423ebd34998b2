"""Helpers for the rendering tests: messages built from (kind, text) parts, and decoding by kind."""

from __future__ import annotations

import json
from typing import Any

from worker.training.render import ACTION, NONE, REASON, RenderedExample

KIND = {"reason": REASON, "action": ACTION, "observation": NONE}


def msg(role: str, *parts: tuple[str | None, str], **extra: Any) -> dict[str, Any]:
    """A message from (kind, text) parts; kind None = uncovered context. Spans kept under '_spans'."""
    text, spans, pos = "", [], 0
    for kind, piece in parts:
        if kind is not None:
            spans.append({"start": pos, "end": pos + len(piece), "kind": kind})
        text += piece
        pos += len(piece)
    return {"role": role, "text": text, "_spans": spans, **extra}


def traj(*messages: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    out, spans = [], []
    for i, m in enumerate(messages):
        spans += [{"message": i, **s} for s in m["_spans"]]
        out.append({k: v for k, v in m.items() if k != "_spans"})
    return out, spans


def call(name: str, arguments: Any) -> str:
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return "<tool_call>\n" + body + "\n</tool_call>"


def kind_text(tok: Any, ex: RenderedExample, kind: int) -> str:
    return tok.decode([i for i, k in zip(ex.input_ids, ex.kinds, strict=True) if k == kind])


def eot_token(tok: Any) -> str:
    return "<|im_end|>" if tok.chat_template else tok.eos_token


def long_trajectory(steps: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    turns = [msg("system", (None, "You are a helpful agent.")), msg("user", (None, "Find the population."))]
    for i in range(steps):
        turns.append(msg("assistant", ("reason", f"Thought: step {i} needs a search.\n"),
                         ("action", call("search", {"query": f"Paris population {i}"}))))
        turns.append(msg("tool", ("observation", f"Observation: result {i} is {i * 1000} people.")))
    turns.append(msg("assistant", ("action", "Final Answer: 2.1 million")))
    return traj(*turns)
