"""Run any model as an agent on the synthetic shop task, with real tool execution, and score it.

`run_agent(generate, problem, fmt=…)` keeps the conversation as CANONICAL messages (`contract.spans.Message`: `{role,
text}`, assistant tool calls rendered as Hermes `<tool_call>` blocks and kept as `tool_calls`, tool
results as role "tool"), exactly the form `contract.formats.parse` gives the teacher's
payloads, so what a student sees when acting is what it was trained on. Each `generate` call is one
step and returns the next assistant text; the runner parses it:

- `openai`: the calls are read in the student's call syntax (`calls.parse_calls`: Hermes `<tool_call>`
  blocks by default, Llama 3.x bare JSON for a native Llama student) and executed in order, one tool message
  per call (a malformed call becomes an "Error: …" observation); a turn without a call is the final answer.
  A turn read in a non-Hermes syntax is stored in the canonical form (free text + Hermes blocks + `tool_calls`),
  so the next prompt renders it back through the template exactly as training did.
- `react`: `Action: name` + `Action Input: {json}` is executed and its observation becomes a tool
  message; `Final Answer: X` ends the run; anything else gets a format-error observation.

Success means the final answer equals the problem's answer numerically (|a - b| ≤ 1e-6; the last
number in the answer text counts). `hf_generate_fn` turns a transformers model + tokenizer into a
`generate` that renders the prompt the way `worker.training.render` renders training text and
decodes greedily to the end-of-turn token (the one training derives from the chat template);
`evaluate_agent` scores a list of problems.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from contract.formats.base import render_tool_call
from worker.synthetic.calls import CallSyntax, parse_calls, student_call_syntax
from worker.synthetic.tasks import Problem
from worker.synthetic.teacher import SYSTEM_PROMPT, Format, call_id
from worker.synthetic.tools import execute

Message = dict[str, Any]
Generate = Callable[[list[Message]], str]

TOLERANCE = 1e-6
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ACTION = re.compile(
    r"^[ \t]*Action[ \t]*:[ \t]*(.*?)[ \t]*\n[ \t]*Action[ \t]*Input[ \t]*:[ \t]*", re.MULTILINE
)
_FINAL = re.compile(r"Final Answer[ \t]*:", re.IGNORECASE)
_OBSERVATION = re.compile(r"\n[ \t]*Observation[ \t]*:")
REACT_FORMAT_ERROR = "Error: expected 'Action:' and 'Action Input:' lines, or 'Final Answer:'"


class ContextOverflow(RuntimeError):
    """The conversation no longer fits the model's context; the run ends as a failure."""


@dataclass
class AgentResult:
    """One agent run. `error` is the failure reason (None on success), see `FAILURE_REASONS`."""

    success: bool
    answer: str | None
    steps: int
    transcript: list[Message] = field(default_factory=list)
    error: str | None = None


FAILURE_REASONS = ("wrong_answer", "no_answer", "max_steps", "context_overflow")


def initial_messages(problem: Problem, fmt: Format = "openai") -> list[Message]:
    """The canonical conversation before the first step (what the formats parser gives a payload)."""
    user: Message = {"role": "user", "text": problem.question}
    if fmt == "openai":
        return [{"role": "system", "text": SYSTEM_PROMPT}, user]
    if fmt == "react":
        return [user]
    raise ValueError(f"fmt must be 'openai' or 'react', not {fmt!r}")


def extract_answer(text: str) -> str | None:
    """The answer in a final text: the last number in it, or None when there is none."""
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def answer_matches(answer: str | None, expected: str) -> bool:
    if answer is None:
        return False
    try:
        return abs(float(answer) - float(expected)) <= TOLERANCE
    except ValueError:
        return False


def _openai_step(text: str, n_calls: int, syntax: CallSyntax = "hermes") -> tuple[Message, list[Message]]:
    """The assistant message for `text` and the tool messages its calls produce."""
    assistant: Message = {"role": "assistant", "text": text}
    calls: list[dict[str, Any]] = []
    results: list[Message] = []
    turn = parse_calls(text, syntax)
    for parsed in turn.calls:
        if isinstance(parsed, str):
            results.append({"role": "tool", "text": parsed})
            continue
        n_calls += 1
        name, arguments = parsed
        # As the openai parser stores a call sent with a JSON-string `arguments` (the teacher's form).
        calls.append({"id": call_id(n_calls), "name": name, "arguments": arguments,
                      "raw_arguments": json.dumps(arguments)})
        results.append({"role": "tool", "text": execute(name, arguments), "tool_call_id": call_id(n_calls)})
    if calls:
        assistant["tool_calls"] = calls
        if syntax != "hermes" and len(calls) == len(turn.calls):  # the canonical form training stores
            blocks = "\n".join(render_tool_call(c["name"], c["arguments"]) for c in calls)
            assistant["text"] = (turn.content + "\n" if turn.content else "") + blocks
        if len(calls) == len(turn.calls):  # where the blocks start, as the parser records it
            assistant["calls_at"] = assistant["text"].find("<tool_call>")
    return assistant, results


def _react_action(text: str) -> tuple[str, Any] | None:
    """(tool, input) of the first Action in `text` when it precedes any Final Answer."""
    action = _ACTION.search(text)
    final = _FINAL.search(text)
    if action is None or (final is not None and final.start() < action.start()):
        return None
    rest = text[action.end() :]
    try:  # a JSON object, possibly spread over lines; anything else is the first line, verbatim
        arguments, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        arguments = rest.split("\n", 1)[0].strip()
    return action.group(1), arguments


def run_agent(
    generate: Generate, problem: Problem, *, fmt: Format = "openai", max_steps: int = 6,
    calls: CallSyntax | None = None,
) -> AgentResult:
    """Let `generate` act on `problem` for at most `max_steps` assistant turns; score the outcome. `calls` is the
    syntax the student writes tool calls in (`calls.student_call_syntax`); by default the one `hf_generate_fn`
    read from the student's template, else Hermes."""
    syntax: CallSyntax = calls or getattr(generate, "call_syntax", None) or "hermes"
    messages = initial_messages(problem, fmt)
    n_calls = 0
    final_text: str
    for step in range(1, max_steps + 1):
        try:
            raw = generate([dict(m) for m in messages])
        except ContextOverflow:
            return AgentResult(False, None, step, messages, "context_overflow")
        if fmt == "react":
            # A model that keeps writing invents its own observations; the tool's reply wins.
            cut = _OBSERVATION.search(raw)
            raw = raw[: cut.start()] if cut else raw
        text = raw.strip()
        if fmt == "openai":
            assistant, results = _openai_step(text, n_calls, syntax)
            messages.append(assistant)
            if results:
                n_calls += len(assistant.get("tool_calls", []))
                messages.extend(results)
                continue
            final_text = text
        else:
            messages.append({"role": "assistant", "text": text})
            action = _react_action(text)
            final = _FINAL.search(text)
            if action is not None:
                messages.append({"role": "tool", "text": execute(*action)})
                continue
            if final is None:
                messages.append({"role": "tool", "text": REACT_FORMAT_ERROR})
                continue
            final_text = text[final.end() :]
        answer = extract_answer(final_text)
        if answer is None:
            return AgentResult(False, final_text.strip() or None, step, messages, "no_answer")
        ok = answer_matches(answer, problem.answer)
        return AgentResult(ok, answer, step, messages, None if ok else "wrong_answer")
    return AgentResult(False, None, max_steps, messages, "max_steps")


def evaluate_agent(
    generate: Generate, problems: Sequence[Problem], fmt: Format = "openai", *, max_steps: int = 6,
    calls: CallSyntax | None = None,
) -> dict[str, Any]:
    """Run `generate` on every problem: success_rate, n, n_success, avg_steps, failures by reason."""
    results = [run_agent(generate, p, fmt=fmt, max_steps=max_steps, calls=calls) for p in problems]
    n = len(results)
    n_success = sum(r.success for r in results)
    return {
        "success_rate": n_success / n if n else 0.0,
        "n": n,
        "n_success": n_success,
        "avg_steps": sum(r.steps for r in results) / n if n else 0.0,
        "failures": dict(Counter(r.error for r in results if r.error is not None)),
    }


def replay_generate(texts: Sequence[str]) -> Generate:
    """A generator that answers with `texts` in order (then nonsense): the teacher-replay oracle."""
    queue = list(texts)

    def generate(messages: list[Message]) -> str:
        return queue.pop(0) if queue else "I do not know."

    return generate


def render_prompt(messages: Sequence[Message], tokenizer: Any, *, tools: Any = None,
                  syntax: str = "native") -> str:
    """The prompt string for the next assistant turn, rendered as `worker.training.render` renders.

    With a chat template: the template over the messages as training passes them (`template.template_messages`;
    with `syntax` "native" and a template that takes structured calls, earlier calls as structure,
    `native.native_generation_prompt`) with the generation prompt. Without: the plain template of
    `render.PLAIN_TEMPLATE_DOC`, ending in the assistant header.
    """
    from worker.training.native import native_generation_prompt, native_support
    from worker.training.template import generation_prompt

    if syntax == "native" and getattr(tokenizer, "chat_template", None) and native_support(tokenizer).calls:
        return native_generation_prompt(messages, tokenizer, tools)
    return generation_prompt(messages, tokenizer, tools)[0]


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn: eos, the special tokens of the end of turn training derives from the
    chat template (`template.template_info`), and `<|im_end|>` when the vocabulary has it."""
    from worker.training.template import template_info

    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    if "<|im_end|>" in vocab:
        ids.append(vocab["<|im_end|>"])
    if getattr(tokenizer, "chat_template", None):
        info = template_info(tokenizer)
        if info.eot_text and info.specials is not None:
            ids += [vocab[m.group()] for m in info.specials.finditer(info.eot_text) if m.group() in vocab]
    if not ids:
        raise ValueError("the tokenizer has no end-of-turn token (eos, or a special its chat template ends turns with)")
    return sorted(set(ids))


def hf_generate_fn(
    model: Any,
    tokenizer: Any,
    *,
    max_new_tokens: int = 96,
    render: Callable[[Sequence[Message]], str] | None = None,
    tools: Any = None,
    syntax: str = "native",
) -> Generate:
    """A `generate` for `run_agent`: render the prompt, greedy-decode until end of turn.

    `render` maps canonical messages to the prompt string (default `render_prompt` with `tools`;
    pass the same `tools` the training records carried, and the job's `tool_call_syntax`). Raises
    `ContextOverflow` when the prompt leaves no room in the model's `max_position_embeddings`.
    """
    import torch

    stop = end_of_turn_ids(tokenizer)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:  # e.g. Llama 3's <|eot_id|>, listed by the checkpoint itself
        stop = sorted(set(stop) | set(configured if isinstance(configured, list) else [configured]))
    limit = getattr(model.config, "max_position_embeddings", None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    to_prompt = render or (lambda msgs: render_prompt(msgs, tokenizer, tools=tools, syntax=syntax))

    def generate(messages: list[Message]) -> str:
        # add_special_tokens=False: the rendered string already holds every special token, as in training.
        ids = tokenizer(to_prompt(messages), add_special_tokens=False)["input_ids"]
        room = max_new_tokens if limit is None else min(max_new_tokens, limit - len(ids))
        if room <= 0:
            raise ContextOverflow(f"prompt of {len(ids)} tokens leaves no room in {limit} positions")
        device = next(model.parameters()).device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=room,
                    do_sample=False,
                    eos_token_id=stop,
                    pad_token_id=pad_id,
                )
        finally:
            model.train(was_training)
        new = out[0, len(ids) :].tolist()
        for i, tok in enumerate(new):
            if tok in stop:
                new = new[:i]
                break
        return tokenizer.decode(new, skip_special_tokens=True)

    # The runner reads the student's calls in the syntax its training rendered them in (`run_agent`).
    generate.call_syntax = student_call_syntax(tokenizer, syntax)  # type: ignore[attr-defined]
    return generate
