"""The trajectory recorder: an agent's run written step by step as an ``openai``-format trajectory.

    with client.trajectory(task="Weather in Paris?", source="my-agent", teacher_model="gpt-4o") as t:
        t.thought("I should look it up.")                       # reasoning_content of the next assistant turn
        call = t.tool_call("get_weather", {"city": "Paris"})  # a structured tool call; returns its id
        t.observation(call, '{"temp_c": 21}')                 # the tool's answer
        t.final("It is 21°C in Paris.")                       # the final answer

Every step is first written to the client's spool (see ``distillery.spool``), so a crash loses
nothing. On exit the trajectory is posted: outcome "failure" when the block raised, "success" when it
ended normally, "unknown" when it was interrupted (KeyboardInterrupt, cancellation), unless set with
``t.outcome = …``. The exception still propagates; delivery problems never raise out of the block:
they leave the trajectory spooled (``t.status == "spooled"``) or rejected (``"rejected"``, with
``t.error``), and are logged.
"""

from __future__ import annotations

import contextvars
import json
import threading
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Protocol

from distillery.spool import Claimed, Spool, record_key

Outcome = Literal["success", "failure", "unknown"]
Status = Literal["recording", "queued", "stored", "spooled", "rejected", "unsent"]
FIRST_THOUGHT_TAG = "first-thought-prefix"

_current: contextvars.ContextVar[Trajectory | None] = contextvars.ContextVar("distillery_trajectory", default=None)


def current_trajectory() -> Trajectory | None:
    """The trajectory whose ``with`` block is running in this thread or task (what capture records into)."""
    return _current.get()


def first_thought_prefix(messages: Sequence[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """``messages`` plus an assistant prefill holding ``prefix``: the teacher continues its first thought
    from there instead of starting afresh (Kang et al., 2025, "first-thought prefix": keeps the teacher
    on the reasoning path when generating agent trajectories).

    Works for Chat Completions servers that continue a final assistant message (vLLM, SGLang, TGI with
    ``continue_final_message``) and for the Anthropic Messages API (prefill). Trailing whitespace is
    removed (Anthropic refuses it). Captured clients (``capture_openai`` / ``capture_anthropic``)
    record ``prefix`` + the continuation as one assistant turn and mark the prefilled text in the
    trajectory's ``metadata.prefilled`` (and tag ``first-thought-prefix``)."""
    if messages and messages[-1].get("role") == "assistant":
        raise ValueError("the messages already end with an assistant turn")
    text = prefix.rstrip()
    if not text:
        raise ValueError("the prefix is empty")
    return [*messages, {"role": "assistant", "content": text}]


class Deliverer(Protocol):
    """What a client gives its recorders: the spool, and how to post a finished one."""

    spool: Spool | None

    def deliver(self, trajectory: Trajectory) -> None: ...


class AsyncDeliverer(Protocol):
    spool: Spool | None

    async def adeliver(self, trajectory: Trajectory) -> None: ...


def _arguments(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


class Trajectory:
    """One run being recorded. Build it with ``client.trajectory(...)``; use it as a context manager."""

    def __init__(self, owner: Deliverer | AsyncDeliverer | None, *, source: str, task: str | None = None,
                 external_id: str | None = None, teacher_model: str | None = None, task_type: str | None = None,
                 system: str | None = None, tools: list[dict[str, Any]] | None = None,
                 tags: Sequence[str] = (), metadata: dict[str, Any] | None = None,
                 reward: float | None = None, background: bool = False) -> None:
        self.owner = owner
        self.background = background  # posted through the client's batch queue instead of at once
        self.envelope: dict[str, Any] = {
            "format": "openai", "source": source, "external_id": external_id or f"run-{uuid.uuid4().hex}",
            "teacher_model": teacher_model, "task": task, "task_type": task_type}
        self.tags = list(tags)
        self.metadata = dict(metadata or {})
        self.tools = tools
        self.messages: list[dict[str, Any]] = []
        if system:
            self.messages.append({"role": "system", "content": system})
        if task:
            self.messages.append({"role": "user", "content": task})
        self.seeded = len(self.messages)  # messages that came from the arguments, not from the run
        self.outcome: Outcome | None = None
        self.reward = reward
        self.answer: str | None = None
        self.status: Status = "unsent"
        self.receipt: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.idempotency_key = f"dsty-{uuid.uuid4().hex}"
        self.capture_state: dict[str, Any] = {}  # capture's bookkeeping (how much of a conversation it has seen)
        self._answered: set[str] = set()
        self._calls: set[str] = set()
        self.lock = threading.RLock()
        self._claim: Claimed | None = None
        self._token: contextvars.Token[Trajectory | None] | None = None
        self._entered = False

    @property
    def external_id(self) -> str:
        return str(self.envelope["external_id"])

    @property
    def spool(self) -> Spool | None:
        return self.owner.spool if self.owner is not None else None

    # -- steps ---------------------------------------------------------------------------------------------

    def _turn(self, *, fresh_if: tuple[str, ...] = ()) -> dict[str, Any]:
        """The open assistant turn (the last message), or a new one when there is none or it already holds
        one of ``fresh_if`` (reasoning comes first in a turn, tool calls last)."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant" or any(last.get(k) for k in fresh_if):
            last = {"role": "assistant", "content": ""}
            self.messages.append(last)
        return last

    def thought(self, text: str, *, prefix: str | None = None) -> None:
        """Reasoning, kept as the turn's ``reasoning_content``; ``prefix``: text the model was prefilled with."""
        with self.lock:
            turn = self._turn(fresh_if=("content", "tool_calls"))
            full = (prefix or "") + text
            turn["reasoning_content"] = f"{turn['reasoning_content']}\n{full}" if turn.get("reasoning_content") \
                else full
            if prefix:
                self.mark_prefill(len(self.messages) - 1, "reasoning_content", prefix)
            self.changed()

    def say(self, text: str, *, prefix: str | None = None) -> None:
        """Assistant text (not the final answer), e.g. what it says before calling a tool."""
        with self.lock:
            turn = self._turn(fresh_if=("tool_calls",))
            full = (prefix or "") + text
            turn["content"] = f"{turn['content']}\n{full}" if turn["content"] else full
            if prefix:
                self.mark_prefill(len(self.messages) - 1, "content", prefix)
            self.changed()

    def tool_call(self, name: str, arguments: Any = None, *, id: str | None = None) -> str:
        """A structured tool call in the current assistant turn; returns the call id for ``observation``."""
        with self.lock:
            call_id = id or f"call_{uuid.uuid4().hex[:24]}"
            turn = self._turn()
            turn.setdefault("tool_calls", []).append({
                "id": call_id, "type": "function",
                "function": {"name": name, "arguments": _arguments({} if arguments is None else arguments)}})
            self._calls.add(call_id)
            self.changed()
            return call_id

    def observation(self, call_id: str, content: str, *, name: str | None = None) -> None:
        """The answer of the tool call ``call_id``."""
        with self.lock:
            if call_id not in self._calls:
                raise ValueError(f"no tool call {call_id!r} in this trajectory")
            if call_id in self._answered:
                raise ValueError(f"tool call {call_id!r} already has its observation")
            message: dict[str, Any] = {"role": "tool", "tool_call_id": call_id, "content": content}
            if name:
                message["name"] = name
            self.messages.append(message)
            self._answered.add(call_id)
            self.changed()

    def final(self, answer: str) -> None:
        """The final answer (an assistant turn of its own when the current one already called tools)."""
        with self.lock:
            self.answer = answer
            self.say(answer)

    def user(self, text: str) -> None:
        with self.lock:
            self.messages.append({"role": "user", "content": text})
            self.changed()

    def message(self, message: dict[str, Any], *, save: bool = True) -> None:
        """Any Chat Completions message, appended as given (tool calls and tool answers tracked);
        ``save=False`` leaves writing the spool record to a later step (or ``changed()``)."""
        with self.lock:
            self.messages.append(dict(message))
            for call in message.get("tool_calls") or []:
                if call.get("id"):
                    self._calls.add(call["id"])
            if message.get("role") == "tool" and message.get("tool_call_id"):
                self._answered.add(message["tool_call_id"])
            if save:
                self.changed()

    def set_outcome(self, outcome: Outcome, reward: float | None = None) -> None:
        self.outcome = outcome
        if reward is not None:
            self.reward = reward

    def mark_prefill(self, index: int, field: str, prefix: str) -> None:
        self.metadata.setdefault("prefilled", []).append({"message": index, "field": field, "text": prefix})
        first_assistant = next(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        if index == first_assistant and FIRST_THOUGHT_TAG not in self.tags:
            self.tags.append(FIRST_THOUGHT_TAG)

    # -- the body and the spool ------------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        """The ``POST /v1/trajectories`` body as it stands."""
        body: dict[str, Any] = {k: v for k, v in self.envelope.items() if v is not None}
        body.update(outcome=self.outcome or "unknown", tags=list(self.tags), metadata=dict(self.metadata),
                    messages=[dict(m) for m in self.messages])
        if self.reward is not None:
            body["reward"] = self.reward
        if self.tools:
            body["tools"] = self.tools
        return body

    def changed(self, state: str = "open") -> None:
        """Write the record as it stands (called after every step, before anything touches the network)."""
        if self._claim is None or self.spool is None:
            return
        record = {"state": state, "body": self.body(), "idempotency_key": self.idempotency_key}
        self._claim.record = record
        self.spool.write(self._claim.key, record)

    @property
    def claim(self) -> Claimed | None:
        """The spool record this recorder holds (None without a spool, or once delivered)."""
        return self._claim

    def settled(self, status: Status, receipt: dict[str, Any] | None = None, error: BaseException | None = None
                ) -> None:
        """Where delivery left it (the owner calls this once the answer is in)."""
        self.status, self.receipt, self.error = status, receipt, error
        self._claim = None

    def _begin(self) -> None:
        if self._entered:
            raise RuntimeError("a trajectory is recorded once; start a new one with client.trajectory(...)")
        self._entered = True
        self.status = "recording"
        spool = self.spool
        if spool is not None:
            key = record_key(self.envelope["source"], self.external_id)
            lock = spool.lock(key)
            if not lock.acquire():
                raise RuntimeError(f"another process is recording {self.external_id!r}")
            self._claim = Claimed(key, {}, lock)
            self.changed()
        self._token = _current.set(self)

    def _end(self, exc: BaseException | None) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self.outcome is None:
            self.outcome = "success" if exc is None else "failure" if isinstance(exc, Exception) else "unknown"
        if exc is not None:
            self.metadata.setdefault("error", f"{type(exc).__name__}: {exc}"[:2000])
        self.changed("done")
        self.status = "unsent"

    # -- context management ------------------------------------------------------------------------------------

    def __enter__(self) -> Trajectory:
        if self.owner is not None and not hasattr(self.owner, "deliver"):
            raise TypeError("a trajectory of AsyncDistillery is recorded with `async with`")
        self._begin()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._end(exc)
        if self.owner is not None:
            self.owner.deliver(self)  # type: ignore[union-attr]

    async def __aenter__(self) -> Trajectory:
        if self.owner is not None and not hasattr(self.owner, "adeliver"):
            raise TypeError("a trajectory of Distillery is recorded with `with` (AsyncDistillery: `async with`)")
        self._begin()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._end(exc)
        if self.owner is not None:
            await self.owner.adeliver(self)  # type: ignore[union-attr]
