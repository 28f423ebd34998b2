"""A scripted teacher for the synthetic shop task, writing POST /v1/trajectories request bodies.

The teacher solves a problem by really calling the tools in `tools.py`: it looks up each item, builds
the calculator expression from the prices it observed, and answers with the calculator's result.
With a seeded probability it first misspells one item, reads the "Error: unknown item" observation
and looks the item up again, so datasets contain recoverable tool errors. Two output formats:

- `openai`: system, user, then assistant turns with a short thought as `content` and OpenAI-shaped
  `tool_calls` (all lookups of a step in one turn), one `tool` message per call, a calculator turn
  and a final assistant answer; plus `tools` (JSON-schema definitions).
- `react`: one ReAct text, one `Action` per step, ending in `Final Answer: <answer>`.

`single_calls=True` writes one call per assistant turn and nothing beside it (no thought): the form a
template that takes one call per turn and drops the text next to it (Llama 3.x) can render natively.

`assistant_texts(payload)` gives the assistant turns as canonical text (Hermes `<tool_call>` blocks
for openai, per the canonical form in docs/agents.md), which is what a replaying generator must emit
to reproduce the run.
`dataset_records` turns the runs into trainer dataset records through the app's own format parser.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.synthetic.tasks import PRICES, Problem
from worker.synthetic.tools import TOOL_SCHEMAS, execute

Format = Literal["openai", "react"]

SYSTEM_PROMPT = "Answer shop questions. Use lookup for prices and calculator for math."
TEACHER_MODEL = "scripted-v1"
TASK_TYPE = "synthetic-shop"
SOURCE = "synthetic"


def tool_call_block(name: str, arguments: Any) -> str:
    """One tool call rendered the Hermes/Qwen way (the canonical form, `contract.formats.base.render_tool_call`)."""
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


def call_id(n: int) -> str:
    """The id of the n-th tool call (1-based) of a conversation; the runner numbers calls the same way."""
    return f"call_{n}"


@dataclass
class _Call:
    name: str
    arguments: dict[str, Any]
    observation: str = ""


@dataclass
class _Turn:
    thought: str
    calls: list[_Call] = field(default_factory=list)


def _misspell(item: str, rng: random.Random) -> str:
    while True:
        i = rng.randrange(1, len(item))
        edit = rng.choice(("drop", "double", "swap"))
        if edit == "drop":
            typo = item[:i] + item[i + 1 :]
        elif edit == "double":
            typo = item[:i] + item[i] + item[i:]
        else:
            i = min(i, len(item) - 2)
            typo = item[:i] + item[i + 1] + item[i] + item[i + 2 :]
        if typo != item and typo not in PRICES:
            return typo


def _run(turn: _Turn) -> _Turn:
    for call in turn.calls:
        call.observation = execute(call.name, call.arguments)
    return turn


def _solve(problem: Problem, rng: random.Random, error_rate: float, parallel: bool) -> list[_Turn]:
    """The teacher's turns, tools executed. The last turn has no calls: its thought is the answer."""
    items = [item for item, _ in problem.items]
    typo_at = rng.randrange(len(items)) if rng.random() < error_rate else None
    typo = _misspell(items[typo_at], rng) if typo_at is not None else None
    turns: list[_Turn] = []
    prices: dict[str, str] = {}

    def lookups(names: list[tuple[int, str]]) -> None:
        shown = [typo if typo is not None and k == typo_at else n for k, n in names]
        listing = " and ".join(shown) if len(shown) <= 2 else ", ".join(shown[:-1]) + " and " + shown[-1]
        noun = "price" if len(shown) == 1 else "prices"
        calls = [_Call("lookup", {"item": s}) for s in shown]
        turns.append(_run(_Turn(f"I need the {noun} of {listing}.", calls)))
        for (_, name), call in zip(names, turns[-1].calls, strict=True):
            if call.observation.startswith("Error:"):
                fix = _Turn(f"{call.arguments['item']} is not an item; I meant {name}.")
                fix.calls.append(_Call("lookup", {"item": name}))
                turns.append(_run(fix))
                call = fix.calls[0]
            prices[name] = call.observation

    indexed = list(enumerate(items))
    if parallel:
        lookups(indexed)
    else:
        for pair in indexed:
            lookups([pair])

    total = "+".join(f"{qty}*{prices[item]}" for item, qty in problem.items)
    if problem.kind == "total":
        expression, goal = total, "total"
    else:
        expression = f"{problem.budget}-({total})" if len(items) > 1 else f"{problem.budget}-{total}"
        goal = "change"
    turns.append(_run(_Turn(f"Now I compute the {goal}.", [_Call("calculator", {"expression": expression})])))
    answer = turns[-1].calls[0].observation
    if answer != problem.answer:  # the tools disagree with the problem generator: a bug, not data
        raise AssertionError(f"{problem.id}: teacher got {answer!r}, expected {problem.answer!r}")
    turns.append(_Turn(answer))
    return turns


def _openai_messages(problem: Problem, turns: list[_Turn], thoughts: bool = True) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": problem.question},
    ]
    n = 0
    for turn in turns[:-1]:
        tool_calls, results = [], []
        for call in turn.calls:
            n += 1
            fn = {"name": call.name, "arguments": json.dumps(call.arguments)}
            tool_calls.append({"id": call_id(n), "type": "function", "function": fn})
            results.append({"role": "tool", "tool_call_id": call_id(n), "content": call.observation})
        messages.append({"role": "assistant", "content": turn.thought if thoughts else "", "tool_calls": tool_calls})
        messages.extend(results)
    messages.append({"role": "assistant", "content": f"The answer is {turns[-1].thought}."})
    return messages


def _react_text(turns: list[_Turn]) -> str:
    lines: list[str] = []
    for turn in turns[:-1]:
        (call,) = turn.calls
        lines += [
            f"Thought: {turn.thought}",
            f"Action: {call.name}",
            f"Action Input: {json.dumps(call.arguments)}",
            f"Observation: {call.observation}",
        ]
    lines += ["Thought: I have the answer.", f"Final Answer: {turns[-1].thought}"]
    return "\n".join(lines)


def teacher_payload(
    problem: Problem, fmt: Format = "openai", *, seed: int = 0, error_rate: float = 0.1, single_calls: bool = False
) -> dict:
    """The POST /v1/trajectories body for the teacher's run on `problem` (deterministic in `seed`)."""
    if fmt not in ("openai", "react"):
        raise ValueError(f"fmt must be 'openai' or 'react', not {fmt!r}")
    rng = random.Random(f"scripted-teacher:{seed}:{problem.id}")
    turns = _solve(problem, rng, error_rate, parallel=fmt == "openai" and not single_calls)
    n_errors = sum(c.observation.startswith("Error:") for t in turns for c in t.calls)
    body: dict[str, Any] = {
        "format": fmt,
        "source": SOURCE,
        "external_id": f"{problem.id}-{fmt}-s{seed}",
        "teacher_model": TEACHER_MODEL,
        "task": problem.question,
        "task_type": TASK_TYPE,
        "outcome": "success",
        "reward": 1.0,
        "tags": ["synthetic", problem.split] + (["tool-error"] if n_errors else []),
        "metadata": {"problem_id": problem.id, "answer": problem.answer, "split": problem.split,
                     "tool_errors": n_errors},
    }
    if fmt == "openai":
        body["messages"] = _openai_messages(problem, turns, thoughts=not single_calls)
        body["tools"] = TOOL_SCHEMAS
    else:
        body["text"] = _react_text(turns)
    return body


def teacher_trajectories(
    problems: list[Problem], fmt: Format = "openai", seed: int = 0, error_rate: float = 0.1,
    single_calls: bool = False,
) -> list[dict]:
    """Teacher payloads for `problems`, in order; see `teacher_payload`."""
    return [teacher_payload(p, fmt, seed=seed, error_rate=error_rate, single_calls=single_calls) for p in problems]


def assistant_texts(payload: dict) -> list[str]:
    """The canonical text of each assistant turn of a teacher payload, in order."""
    texts: list[str] = []
    if payload["format"] == "openai":
        for m in payload["messages"]:
            if m["role"] != "assistant":
                continue
            parts = [m["content"]] if m.get("content") else []
            blocks = [
                tool_call_block(tc["function"]["name"], json.loads(tc["function"]["arguments"]))
                for tc in m.get("tool_calls") or []
            ]
            if blocks:
                parts.append("\n".join(blocks))
            texts.append("\n".join(parts))
        return texts
    current: list[str] = []
    for line in payload["text"].split("\n"):
        if line.startswith("Observation:"):
            texts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    texts.append("\n".join(current))
    return texts


def dataset_records(
    problems: list[Problem],
    fmt: Format = "openai",
    *,
    seed: int = 0,
    error_rate: float = 0.1,
    include_tools: bool = False,
    single_calls: bool = False,
) -> list[dict[str, Any]]:
    """Trainer dataset records (`contract.spans.DatasetRecord`) for the teacher's runs on `problems`.

    Each payload goes through the app's own ingest path (`contract.formats.parse` for the
    canonical messages and auto spans, `compute_complexity` for the score), so the records are what
    a dataset export of these trajectories would hold. Test-split problems become "eval" records;
    complexity is min-max normalized over the returned records. `include_tools=False` drops the tool
    schemas: a chat template that renders them adds ~250 tokens to every sequence of a tiny model
    (act with `hf_generate_fn(..., tools=None)` to match).
    """
    from contract.complexity import compute_complexity
    from contract.formats import parse

    records: list[dict[str, Any]] = []
    for problem, payload in zip(
        problems, teacher_trajectories(problems, fmt, seed=seed, error_rate=error_rate, single_calls=single_calls),
        strict=True
    ):
        # As ingest does: only the format's own fields (and the task, which react needs) are parsed.
        parsed = parse(fmt, {k: v for k, v in payload.items() if k in ("messages", "tools", "text", "task")})
        records.append({
            "id": payload["external_id"],
            "messages": parsed.messages,
            "spans": parsed.spans,
            "tools": parsed.tools if include_tools else None,
            "complexity": float(compute_complexity(parsed.messages, parsed.spans)["score"]),
            "split": "train" if problem.split == "train" else "eval",
        })
    scores = [r["complexity"] for r in records]
    lo, hi = min(scores, default=0.0), max(scores, default=0.0)
    for r in records:
        r["complexity"] = (r["complexity"] - lo) / (hi - lo) if hi > lo else 0.0
    return records
