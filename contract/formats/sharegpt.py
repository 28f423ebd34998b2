"""ShareGPT (LLaMA-Factory, AgentInstruct, Agent-FLAN): `conversations` of {from, value, loss?},
optional top-level `system` and `tools` (a JSON string or an array).

Canonical rules:
- a non-empty top-level `system` becomes the first message (role system); then one message per turn:
  human → user, gpt → assistant, function_call → assistant, observation (or tool) → tool,
  system → system. `value` must be a string and is kept exactly.
- function_call: `value` is JSON, one {"name", "arguments"} object or an array of them (parallel
  calls); the text is their Hermes blocks joined by "\\n", kept as `tool_calls` with id None (and
  `calls_at` 0: the blocks are the whole text). `arguments` is kept as given (a string stays a string).
- never-trained text is sanitized, not refused (`base.observation_text`): the values of observation
  (and tool) turns and of human turns that feed an observation back (their own mark, or the
  request's `observation_role`); NUL and lone surrogates there become U+FFFD and are counted in
  `sanitized`.
- `loss`: true/false is kept on the message as "loss"; null or absent → no key. A message with
  "loss": false gets no spans (context only).
- auto spans: a gpt turn in ReAct style (labels at line start) is segmented like a react assistant
  turn, inline "<tool_call>" blocks → action, other plain gpt text → action when it is the final
  answer (last turn, or followed by a human/system turn), else reason; function_call blocks →
  action each; observation → observation; human text starting with "Observation:" → observation.
Export writes the first non-empty system message as `system`, `loss` flags from the messages,
tool calls as function_call turns (free text before them as a gpt turn) read back from the stored
structure (`base.split_calls`: arguments in the order received), `tools` as a JSON string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contract.formats.base import (
    ParsedTrajectory,
    fail,
    json_type,
    observation_text,
    opt_str,
    parse_tools,
    render_calls,
    req_dict,
    req_list,
    req_role,
    req_str,
    split_calls,
)
from contract.formats.jsonvalue import UNSTORABLE_JSON, is_json_value, try_json
from contract.formats.segment import (
    auto_spans,
    hermes_assistant_spans,
    is_observation_user,
)
from contract.spans import Message, Role, ToolCall

_FROM: dict[str, Role] = {"human": "user", "gpt": "assistant", "function_call": "assistant",
                          "observation": "tool", "tool": "tool", "system": "system"}
_TO = {"user": "human", "assistant": "gpt", "tool": "observation", "system": "system"}


def _function_calls(value: str, field: str) -> list[ToolCall]:
    ok, parsed = try_json(value)
    if not ok:
        fail(field, "invalid_json", 'a function_call value must be JSON {"name": …, "arguments": …}')
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        fail(field, "invalid_tool_call", "holds no call")
    calls: list[ToolCall] = []
    for k, item in enumerate(items):
        where = f"{field}[{k}]" if isinstance(parsed, list) else field
        if not isinstance(item, dict):
            fail(where, "invalid_tool_call",
                 f'a call must be an object {{"name", "arguments"}}, got {json_type(item)}')
        if not isinstance(item.get("name"), str) or not item["name"]:
            fail(f"{where}.name", "invalid_tool_call", "must be a non-empty string")
        if "arguments" not in item:
            fail(f"{where}.arguments", "missing_field", "is required")
        if not is_json_value(item):
            fail(where, "invalid_value", UNSTORABLE_JSON)
        calls.append({"id": None, "name": item["name"], "arguments": item["arguments"]})
    return calls


def parse(payload: dict[str, Any]) -> ParsedTrajectory:
    turns = req_list(payload.get("conversations"), "conversations")
    system = opt_str(payload.get("system"), "system")
    tools = parse_tools(payload.get("tools"), "tools", allow_string=True)
    messages: list[Message] = [{"role": "system", "text": system}] if system else []
    block_lens: list[list[int]] = [[] for _ in messages]
    sanitized = 0
    unmarked: list[tuple[int, Any, str]] = []  # sanitized human turns, strict unless they are observations
    for i, turn in enumerate(turns):
        f = f"conversations[{i}]"
        req_dict(turn, f)
        source = req_role(turn.get("from"), _FROM, f"{f}.from")
        value, n = observation_text(turn.get("value"), f"{f}.value")
        if n and source == "human":
            unmarked.append((len(messages), turn.get("value"), f"{f}.value"))
        elif n and source not in ("observation", "tool"):
            req_str(turn.get("value"), f"{f}.value")  # trained or context text: strict
        sanitized += n
        loss = turn.get("loss")
        if loss is not None and not isinstance(loss, bool):
            fail(f"{f}.loss", "invalid_type", f"must be true, false or null, got {json_type(loss)}")
        lens: list[int] = []
        if source == "function_call":
            calls = _function_calls(value, f"{f}.value")
            blocks, lens = render_calls(calls, f"{f}.value")
            msg: Message = {"role": "assistant", "text": blocks, "tool_calls": calls, "calls_at": 0}
        else:
            msg = {"role": _FROM[source], "text": value}
        if loss is not None:
            msg["loss"] = loss
        messages.append(msg)
        block_lens.append(lens)
    spans = auto_spans(messages, lambda i, text, final: hermes_assistant_spans(text, block_lens[i], final))
    for i, value, field in unmarked:  # the segmenter has marked the observation user turns by now
        if not is_observation_user(messages[i]):
            req_str(value, field)
    return ParsedTrajectory(messages=messages, spans=spans, tools=tools, sanitized=sanitized)


def _turn(source: str, value: str, msg: Message) -> dict[str, Any]:
    turn: dict[str, Any] = {"from": source, "value": value}
    if "loss" in msg:
        turn["loss"] = msg["loss"]
    return turn


def export(messages: Sequence[Message], tools: list[Any] | None) -> dict[str, Any]:
    convs: list[dict[str, Any]] = []
    system: str | None = None
    for k, msg in enumerate(messages):
        role = msg["role"]
        if k == 0 and role == "system" and msg["text"] and "loss" not in msg:
            system = msg["text"]
            continue
        free, calls = split_calls(msg) if role == "assistant" else (msg["text"], [])
        if not calls:
            convs.append(_turn(_TO[role], msg["text"], msg))
            continue
        if free:
            convs.append(_turn("gpt", free, msg))
        items = [{"name": c["name"], "arguments": c["arguments"]} for c in calls]
        value = json.dumps(items[0] if len(items) == 1 else items, ensure_ascii=False)
        convs.append(_turn("function_call", value, msg))
    result: dict[str, Any] = {"conversations": convs}
    if system is not None:
        result["system"] = system
    if tools is not None:
        result["tools"] = json.dumps(tools, ensure_ascii=False)
    return result
