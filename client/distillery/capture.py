"""Drop-in capture for the OpenAI and Anthropic Python SDKs, without importing them.

    openai = capture_openai(OpenAI(), api)          # api: a Distillery client, or a recorder
    with api.trajectory(task=question, source="my-agent") as t:
        reply = openai.chat.completions.create(model=..., messages=messages, tools=tools)
        ...                                         # every completion lands in t

``capture_openai`` wraps ``client.chat.completions.create`` and ``capture_anthropic`` wraps
``client.messages.create`` (sync and async clients, streamed or not); everything else passes
through untouched. Each call is recorded into ``target`` when it is a recorder, else into the
trajectory whose ``with`` block is running (none: nothing is recorded). Recorded in the ``openai``
format: the conversation the model saw (the request's messages the trajectory does not hold yet:
on the first call the whole conversation replaces what ``trajectory(task=…)`` seeded, later the
tool answers and user turns after the model's last turn, tool answers already recorded skipped),
then its reply as an assistant turn with ``reasoning_content`` (OpenAI-compatible reasoning, or
Anthropic ``thinking`` blocks) and structured ``tool_calls``; only the first choice. A request ending
with an assistant message is a prefill (see ``first_thought_prefix``): the reply is recorded as
prefill + continuation and the prefilled text is marked. ``teacher_model`` and ``tools`` are filled
from the request when the trajectory has none.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from distillery.recorder import Trajectory, current_trajectory

T = TypeVar("T")
Convert = Callable[[dict[str, Any]], tuple[list[dict[str, Any]], str | None, list[dict[str, Any]] | None]]


def plain(obj: Any) -> Any:
    """An SDK object (pydantic model) or mapping as plain dicts and lists, None values dropped."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump()
    elif hasattr(obj, "to_dict") and not isinstance(obj, dict):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def _text(content: Any) -> str:
    """Text of a content field: a string, or the text parts of a list of parts/blocks joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


class _Proxy:
    """Attribute access passed through to ``target``, except the names in ``wrap`` (wrapped on access)."""

    def __init__(self, target: Any, wrap: dict[str, Callable[[Any], Any]]) -> None:
        self._target = target
        self._wrap = wrap

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        return self._wrap[name](value) if name in self._wrap else value

    def __enter__(self) -> Any:
        self._target.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._target.__exit__(*exc)

    async def __aenter__(self) -> Any:
        await self._target.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._target.__aexit__(*exc)

    def __repr__(self) -> str:
        return f"<captured {self._target!r}>"


# -- what a completion adds to a trajectory ------------------------------------------------------------------

def _tool_seen(t: Trajectory, message: dict[str, Any]) -> bool:
    ids = {m.get("tool_call_id") for m in t.messages if m["role"] == "tool"}
    return message["role"] == "tool" and message.get("tool_call_id") in ids


def record_exchange(t: Trajectory, request: list[dict[str, Any]], reply: dict[str, Any], *, model: str | None,
                    tools: list[dict[str, Any]] | None) -> None:
    """Add one model call to ``t``: the request's messages it lacks, then the reply (prefill joined)."""
    with t.lock:
        prefix = None
        if request and request[-1]["role"] == "assistant" and not request[-1].get("tool_calls"):
            prefix = request[-1].get("content") or ""
            request = request[:-1]
        if not t.capture_state.get("synced") and len(t.messages) == t.seeded:
            t.messages.clear()  # the first call: the conversation as sent replaces what task= seeded
            new = request
        else:
            last = max((i for i, m in enumerate(request) if m["role"] == "assistant"), default=-1)
            new = [m for m in request[last + 1:] if not _tool_seen(t, m)]
        t.capture_state["synced"] = True
        for message in new:
            t.message(message, save=False)
        if prefix:
            reply = {**reply, "content": prefix + (reply.get("content") or "")}
        t.message(reply, save=False)
        if prefix:
            t.mark_prefill(len(t.messages) - 1, "content", prefix)
        if model and not t.envelope.get("teacher_model"):
            t.envelope["teacher_model"] = model
        if tools and not t.tools:
            t.tools = tools
        t.changed()


# -- OpenAI Chat Completions -----------------------------------------------------------------------------------

_OPENAI_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call")
_REASONING_KEYS = ("reasoning_content", "reasoning")  # kept when text (some providers send structures)


def _openai_message(raw: Any) -> dict[str, Any]:
    m = plain(raw)
    out = {k: m[k] for k in _OPENAI_KEYS if k in m}
    out.update({k: m[k] for k in _REASONING_KEYS if isinstance(m.get(k), str)})
    out["content"] = _text(m.get("content"))  # non-text parts (images, audio) are not kept
    if out.get("tool_calls"):
        out["tool_calls"] = [{"id": c.get("id"), "type": "function", "function": plain(c["function"])}
                             for c in out["tool_calls"] if c.get("function")]
    return out


def openai_request(kwargs: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None, list[dict[str, Any]] | None]:
    tools = plain(kwargs.get("tools")) or None
    return [_openai_message(m) for m in kwargs.get("messages") or []], kwargs.get("model"), tools


def openai_reply(response: Any) -> dict[str, Any]:
    choices = plain(response).get("choices") or [{}]
    return _openai_message({"role": "assistant", **(choices[0].get("message") or {})})


class OpenAIStream:
    """Chat Completions chunks folded into the assistant message they spell."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: Any) -> None:
        choices = plain(chunk).get("choices") or []
        delta = next((c.get("delta") or {} for c in choices if c.get("index", 0) == 0), {})
        self.content.append(delta.get("content") or "")
        self.reasoning.append(delta.get("reasoning_content") or delta.get("reasoning") or "")
        for part in delta.get("tool_calls") or []:
            call = self.calls.setdefault(part.get("index", len(self.calls)),
                                         {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = part.get("id") or call["id"]
            fn = part.get("function") or {}
            call["function"]["name"] += fn.get("name") or ""
            call["function"]["arguments"] += fn.get("arguments") or ""

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if any(self.reasoning):
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return message


# -- Anthropic Messages ------------------------------------------------------------------------------------------

def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else plain(content or [])


def _anthropic_assistant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    thinking = [b.get("thinking", "") for b in blocks if b.get("type") == "thinking"]
    calls = [{"id": b.get("id"), "type": "function",
              "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {}, ensure_ascii=False)}}
             for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": _text(blocks)}
    if any(thinking):
        message["reasoning_content"] = "\n".join(t for t in thinking if t)
    if calls:
        message["tool_calls"] = calls
    return message


def _anthropic_messages(raw: Any) -> list[dict[str, Any]]:
    m = plain(raw)
    blocks = _blocks(m.get("content"))
    if m.get("role") == "assistant":
        return [_anthropic_assistant(blocks)]
    out: list[dict[str, Any]] = []
    for b in blocks:
        if b.get("type") == "tool_result":
            text = _text(_blocks(b.get("content")))
            out.append({"role": "tool", "tool_call_id": b.get("tool_use_id"),
                        "content": f"Error: {text}" if b.get("is_error") else text})
    text = _text(blocks)
    if text or not out:
        out.append({"role": "user", "content": text})
    return out


def anthropic_request(kwargs: dict[str, Any]
                      ) -> tuple[list[dict[str, Any]], str | None, list[dict[str, Any]] | None]:
    messages = []
    system = kwargs.get("system")
    if system:
        messages.append({"role": "system", "content": _text(_blocks(system))})
    for m in kwargs.get("messages") or []:
        messages.extend(_anthropic_messages(m))
    tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                               "parameters": t.get("input_schema", {})}}
             for t in plain(kwargs.get("tools") or []) if t.get("name")]
    return messages, kwargs.get("model"), tools or None


def anthropic_reply(response: Any) -> dict[str, Any]:
    return _anthropic_assistant(_blocks(plain(response).get("content")))


class AnthropicStream:
    """Messages stream events folded into the message's content blocks."""

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}
        self.json: dict[int, list[str]] = {}

    def feed(self, event: Any) -> None:
        e = plain(event)
        kind, index = e.get("type"), e.get("index", 0)
        if kind == "content_block_start":
            self.blocks[index] = dict(e.get("content_block") or {})
        elif kind == "content_block_delta":
            block, delta = self.blocks.setdefault(index, {}), e.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif delta.get("type") == "input_json_delta":
                self.json.setdefault(index, []).append(delta.get("partial_json", ""))

    def message(self) -> dict[str, Any]:
        for index, parts in self.json.items():
            try:
                self.blocks[index]["input"] = json.loads("".join(parts) or "{}")
            except ValueError:
                self.blocks[index]["input"] = {"_raw": "".join(parts)}
        return _anthropic_assistant([self.blocks[i] for i in sorted(self.blocks)])


# -- wrapping ----------------------------------------------------------------------------------------------------

class _Recording:
    """A streamed reply: passed through chunk by chunk, recorded once it ends (or is closed early)."""

    def __init__(self, stream: Any, folder: OpenAIStream | AnthropicStream, done: Callable[[dict[str, Any]], None]):
        self._stream = stream
        self._folder = folder
        self._done: Callable[[dict[str, Any]], None] | None = done

    def _finish(self) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            done(self._folder.message())

    def __iter__(self) -> Iterator[Any]:
        try:
            for chunk in self._stream:
                self._folder.feed(chunk)
                yield chunk
        finally:
            self._finish()

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self._stream:
                self._folder.feed(chunk)
                yield chunk
        finally:
            self._finish()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __enter__(self) -> _Recording:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._finish()
        self._stream.__exit__(*exc)

    async def __aenter__(self) -> _Recording:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._finish()
        await self._stream.__aexit__(*exc)

    def close(self) -> None:
        self._finish()
        self._stream.close()


def _wrap_create(create: Callable[..., Any], target: Any, convert: Convert, reply: Callable[[Any], dict[str, Any]],
                 folder: Callable[[], OpenAIStream | AnthropicStream]) -> Callable[..., Any]:
    def resolve() -> Trajectory | None:
        return target if isinstance(target, Trajectory) else current_trajectory()

    def record(t: Trajectory, kwargs: dict[str, Any], message: dict[str, Any]) -> None:
        request, model, tools = convert(kwargs)
        record_exchange(t, request, message, model=model, tools=tools)

    def handle(t: Trajectory, kwargs: dict[str, Any], result: Any) -> Any:
        if kwargs.get("stream"):
            return _Recording(result, folder(), lambda message: record(t, kwargs, message))
        record(t, kwargs, reply(result))
        return result

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        t = resolve()
        result = create(*args, **kwargs)
        if t is None:
            return result
        if inspect.isawaitable(result):
            async def finish() -> Any:
                return handle(t, kwargs, await result)
            return finish()
        return handle(t, kwargs, result)

    return wrapped


def capture_openai(client: T, target: Any = None) -> T:
    """``client`` (``openai.OpenAI`` / ``AsyncOpenAI``, or anything shaped like them) with every
    ``chat.completions.create`` recorded into ``target`` (a recorder) or the current trajectory."""
    def completions(c: Any) -> Any:
        return _Proxy(c, {"create": lambda create: _wrap_create(create, target, openai_request, openai_reply,
                                                                 OpenAIStream)})
    return _Proxy(client, {"chat": lambda chat: _Proxy(chat, {"completions": completions})})  # type: ignore[return-value]


def capture_anthropic(client: T, target: Any = None) -> T:
    """``client`` (``anthropic.Anthropic`` / ``AsyncAnthropic``) with every ``messages.create`` recorded
    (``thinking`` blocks as ``reasoning_content``, ``tool_use`` as tool calls, ``tool_result`` as tool turns)."""
    def messages(m: Any) -> Any:
        return _Proxy(m, {"create": lambda create: _wrap_create(create, target, anthropic_request, anthropic_reply,
                                                                 AnthropicStream)})
    return _Proxy(client, {"messages": messages})  # type: ignore[return-value]
