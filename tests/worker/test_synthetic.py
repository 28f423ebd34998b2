"""The synthetic shop task: seeded problems, real tools, a scripted teacher and the agent runner."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from worker.synthetic import (
    PRICES,
    TOOL_SCHEMAS,
    assistant_texts,
    dataset_records,
    evaluate_agent,
    execute,
    generate_problems,
    hf_generate_fn,
    make_problem,
    render_prompt,
    replay_generate,
    run_agent,
    teacher_payload,
    teacher_trajectories,
)
from worker.synthetic.runner import ContextOverflow, initial_messages
from worker.synthetic.teacher import Format
from worker.synthetic.tools import CalculatorError, calculate

FORMATS: tuple[Format, ...] = ("openai", "react")


# --- problems -------------------------------------------------------------------------------------


def test_same_seed_same_problems_and_prefix_stable() -> None:
    a = generate_problems(40, seed=3)
    assert a == generate_problems(40, seed=3)
    assert generate_problems(10, seed=3) == a[:10]
    assert [p.id for p in generate_problems(40, seed=4)] != [p.id for p in a]
    assert len({p.id for p in a}) == 40


def test_train_and_test_are_disjoint_and_cover_the_same_items() -> None:
    train = generate_problems(400, seed=0, split="train")
    test = generate_problems(100, seed=0, split="test")
    assert {p.split for p in train} == {"train"} and {p.split for p in test} == {"test"}
    assert not {p.id for p in train} & {p.id for p in test}
    assert not {p.question for p in train} & {p.question for p in test}
    # The other seed's test problems never leak into this seed's train split either.
    assert not {p.id for p in train} & {p.id for p in generate_problems(100, seed=1, split="test")}
    items = lambda ps: {i for p in ps for i, _ in p.items}  # noqa: E731
    assert items(train) == items(test) == set(PRICES)


def test_problems_vary_and_answers_follow_from_the_prices() -> None:
    problems = generate_problems(200, seed=0)
    assert {len(p.items) for p in problems} == {1, 2, 3}
    assert {p.kind for p in problems} == {"total", "change"}
    for p in problems:
        total = sum(q * PRICES[i] for i, q in p.items)
        value = total if p.kind == "total" else p.budget - total  # type: ignore[operator]
        assert float(p.answer) == pytest.approx(value)
        assert [s.tool for s in p.steps] == ["lookup"] * len(p.items) + ["calculator"]
        assert p.n_steps == len(p.items) + 1
    p = make_problem("change", (("apple", 3), ("pear", 2)), 10)
    assert p.question == "I pay 10 for 3 apples and 2 pears. What is my change?"
    assert (p.answer, p.expression) == ("5", "10-(3*0.5+2*1.75)")
    with pytest.raises(ValueError):
        make_problem("total", (("kiwi", 1),))


def test_max_items_gives_easier_variants() -> None:
    assert {len(p.items) for p in generate_problems(100, seed=0, max_items=2)} == {1, 2}
    easy = generate_problems(300, seed=0, max_items=1)
    assert {p.n_steps for p in easy} == {2}
    assert not {p.id for p in easy} & {p.id for p in generate_problems(80, seed=0, split="test", max_items=1)}
    with pytest.raises(ValueError):
        generate_problems(500, seed=0, max_items=1)  # more than the variant holds
    with pytest.raises(ValueError):
        generate_problems(1, max_items=4)


# --- tools ----------------------------------------------------------------------------------------


def test_tools_execute_and_errors_are_observations() -> None:
    assert execute("lookup", {"item": "apple"}) == "0.5"
    assert execute("lookup", '{"item": "pear"}') == "1.75"
    assert execute("lookup", "peach") == "1.25"  # a bare ReAct action input
    assert execute("lookup", {"item": "kiwi"}) == "Error: unknown item 'kiwi'"
    assert execute("lookup", {"name": "apple"}).startswith("Error: lookup needs")
    assert execute("lookup", {"item": "apple", "n": 2}).startswith("Error: unexpected argument")
    assert execute("lookup", None).startswith("Error:")
    assert execute("search", {"q": "x"}) == "Error: unknown tool 'search'"
    assert execute("calculator", {"expression": "3*0.5+2*1.75"}) == "5"
    assert execute("calculator", {"expression": "20-(4*1.25)"}) == "15"
    assert execute("calculator", {"expression": "-(7/2)"}) == "-3.5"
    assert execute("calculator", {"expression": "1/3"}) == "0.333333"
    assert execute("calculator", "9*0.25") == "2.25"


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "2**10",
        "x+1",
        "abs(-1)",
        "[1, 2]",
        "'a'*3",
        "True+1",
        "1 if 1 else 2",
        "(1).real",
        "1+",
        "",
        "1+" * 150 + "1",
    ],
)
def test_calculator_refuses_what_is_not_arithmetic(expression: str) -> None:
    with pytest.raises(CalculatorError):
        calculate(expression)
    assert execute("calculator", {"expression": expression}).startswith("Error: ")


def test_calculator_reports_division_by_zero() -> None:
    assert execute("calculator", {"expression": "1/(2-2)"}) == "Error: division by zero"


# --- teacher --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_teacher_trajectories_replay_to_full_success(fmt: Format) -> None:
    problems = generate_problems(60, seed=1, split="test")
    payloads = teacher_trajectories(problems, fmt, seed=1, error_rate=0.5)
    assert payloads == teacher_trajectories(problems, fmt, seed=1, error_rate=0.5)
    with_errors = [p for p in payloads if p["metadata"]["tool_errors"]]
    assert 10 < len(with_errors) < 50  # the seeded error rate is in effect, and recoverable
    for problem, payload in zip(problems, payloads, strict=True):
        result = run_agent(replay_generate(assistant_texts(payload)), problem, fmt=fmt)
        assert result.success, (problem, result)
        assert result.answer == problem.answer
        n_errors = sum(m["role"] == "tool" and m["text"].startswith("Error:") for m in result.transcript)
        assert n_errors == payload["metadata"]["tool_errors"]
    replays = {
        p.question: replay_generate(assistant_texts(pl)) for p, pl in zip(problems, payloads, strict=True)
    }

    def generate(messages: list[dict[str, Any]]) -> str:
        question = next(m["text"] for m in messages if m["role"] == "user")
        return replays[question](messages)

    stats = evaluate_agent(generate, problems, fmt)
    assert stats["success_rate"] == 1.0 and stats["n"] == 60 and stats["failures"] == {}


def test_teacher_payloads_are_valid_requests() -> None:
    from app.trajectories.schemas import TrajectoryCreate

    problem = make_problem("total", (("apple", 3), ("pear", 2)))
    for fmt in FORMATS:
        body = teacher_payload(problem, fmt, error_rate=0.0)
        TrajectoryCreate.model_validate(body)
        assert body["format"] == fmt and body["task_type"] == "synthetic-shop"
        assert body["outcome"] == "success" and body["reward"] == 1.0
    react = teacher_payload(problem, "react", error_rate=0.0)["text"]
    assert react.startswith('Thought: I need the price of apple.\nAction: lookup\nAction Input: {"item": ')
    assert react.endswith("\nObservation: 5\nThought: I have the answer.\nFinal Answer: 5")
    openai = teacher_payload(problem, "openai", error_rate=1.0)
    assert openai["tools"] == TOOL_SCHEMAS
    calls = [tc for m in openai["messages"] for tc in m.get("tool_calls", [])]
    assert [tc["id"] for tc in calls] == ["call_1", "call_2", "call_3", "call_4"]
    assert all(tc["type"] == "function" and isinstance(tc["function"]["arguments"], str) for tc in calls)
    tool_msgs = [m for m in openai["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == [tc["id"] for tc in calls]
    assert sum(m["content"].startswith("Error: unknown item") for m in tool_msgs) == 1
    assert openai["messages"][-1] == {"role": "assistant", "content": "The answer is 5."}


# --- runner ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("I am not sure what you mean.", None),
        ("Final Answer: 12345", "wrong_answer"),
        ('<tool_call>\n{"name": "lookup", "arguments": {"item": "apple"}}\n</tool_call>', "max_steps"),
        ("Action: lookup\nAction Input: {\"item\": \"apple\"}", "max_steps"),
    ],
)
def test_nonsense_scores_zero_and_terminates(fmt: Format, reply: str, reason: str | None) -> None:
    problems = generate_problems(5, seed=2, split="test")
    calls: list[int] = []

    def generate(messages: list[dict[str, Any]]) -> str:
        calls.append(len(messages))
        return reply

    stats = evaluate_agent(generate, problems, fmt, max_steps=4)
    assert stats["success_rate"] == 0.0 and stats["n"] == 5
    assert len(calls) <= 5 * 4 and stats["avg_steps"] <= 4
    expected = reason or ("no_answer" if fmt == "openai" else "max_steps")
    if fmt == "openai" and reply.startswith("Action:"):
        expected = "no_answer"  # a ReAct action is just a final text without a number to openai
    assert stats["failures"] == {expected: 5}


def test_openai_runner_executes_calls_and_reports_malformed_ones() -> None:
    problem = make_problem("total", (("apple", 3),))
    replies = iter([
        'Let me look.\n<tool_call>\n{"name": "lookup", "arguments": "{\\"item\\": \\"apple\\"}"}\n'
        "</tool_call>\n"
        "<tool_call>\nnot json\n</tool_call>",
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "3*0.5"}}',  # unterminated
        '<tool_call>\n{"name":"calculator","arguments":{"expression":"3*0.5"}}\n</tool_call>',
        "  It costs 1.50 in total.  ",
    ])
    result = run_agent(lambda msgs: next(replies), problem, fmt="openai")
    assert result.success and result.answer == "1.50" and result.steps == 4
    roles = [m["role"] for m in result.transcript]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "assistant", "tool",
                     "assistant"]
    t = result.transcript
    assert t[2]["tool_calls"] == [{"id": "call_1", "name": "lookup", "arguments": {"item": "apple"},
                                   "raw_arguments": '{"item": "apple"}'}]
    assert t[3] == {"role": "tool", "text": "0.5", "tool_call_id": "call_1"}
    assert t[4] == {"role": "tool", "text": "Error: tool call is not valid JSON"}
    assert "tool_calls" not in t[5] and t[6]["text"] == "Error: unterminated <tool_call> block"
    assert t[8] == {"role": "tool", "text": "1.5", "tool_call_id": "call_2"}
    assert t[9] == {"role": "assistant", "text": "It costs 1.50 in total."}


def test_react_runner_cuts_invented_observations_and_reports_format_errors() -> None:
    problem = make_problem("change", (("lime", 4),), 10)
    seen: list[list[dict[str, Any]]] = []
    replies = iter([
        "Thought: hmm",
        'Thought: price.\nAction: lookup\nAction Input: {"item": "lime"}\nObservation: 99\nThought: I',
        "Action: calculator\nAction Input: 10-4*0.25",
        "Thought: done.\nFinal Answer: 9",
    ])

    def generate(messages: list[dict[str, Any]]) -> str:
        seen.append(messages)
        return next(replies)

    result = run_agent(generate, problem, fmt="react")
    assert result.success and result.steps == 4
    assert seen[0] == initial_messages(problem, "react") == [{"role": "user", "text": problem.question}]
    t = result.transcript
    assert t[2]["role"] == "tool" and t[2]["text"].startswith("Error: expected 'Action:'")
    assert t[3]["text"] == 'Thought: price.\nAction: lookup\nAction Input: {"item": "lime"}'
    assert t[4] == {"role": "tool", "text": "0.25"} and t[6] == {"role": "tool", "text": "9"}


def test_generator_sees_canonical_copies() -> None:
    problem = make_problem("total", (("plum", 2),))
    payload = teacher_payload(problem, "openai", error_rate=0.0)
    texts = iter(assistant_texts(payload))

    def vandal(messages: list[dict[str, Any]]) -> str:
        messages.clear()  # a generator must not be able to corrupt the runner's conversation
        return next(texts)

    assert run_agent(vandal, problem).success


def test_context_overflow_is_a_failure() -> None:
    def generate(messages: list[dict[str, Any]]) -> str:
        raise ContextOverflow("full")

    result = run_agent(generate, make_problem("total", (("plum", 2),)))
    assert (result.success, result.error, result.steps) == (False, "context_overflow", 1)


# --- act-time text == train-time text -------------------------------------------------------------


def _replayed_transcript(payload: dict[str, Any], problem: Any, fmt: Format) -> list[dict[str, Any]]:
    result = run_agent(replay_generate(assistant_texts(payload)), problem, fmt=fmt)
    assert result.success
    return result.transcript


@pytest.mark.parametrize("fmt", FORMATS)
def test_runner_conversation_matches_the_format_parser(fmt: Format) -> None:
    import contract.formats as formats  # the project's own module: an import error must fail, not skip
    for problem in generate_problems(20, seed=5):
        payload = teacher_payload(problem, fmt, seed=5, error_rate=0.3)
        # As ingest does: the format's own fields, plus the task for react.
        fields = {k: v for k, v in payload.items() if k in ("messages", "tools", "text", "task")}
        parsed = formats.parse(fmt, fields)
        assert _replayed_transcript(payload, problem, fmt) == parsed.messages


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.training import tiny
    corpus = []
    for fmt in FORMATS:
        for payload in teacher_trajectories(generate_problems(30, seed=0), fmt):
            corpus += [payload["task"], *assistant_texts(payload)]
    return tiny.build_tiny_model(tmp_path_factory.mktemp("tiny"), corpus, chat_template=tiny.CHATML_TEMPLATE)


@pytest.mark.parametrize("chat_template", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
def test_prompts_are_prefixes_of_the_training_render(tiny_dir: Path, fmt: Format, chat_template: bool) -> None:
    from transformers import AutoTokenizer

    from worker.training import render

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    if not chat_template:
        tok.chat_template = None  # the trainer's built-in plain template
    problem = make_problem("total", (("apple", 3), ("pear", 2)))
    payload = teacher_payload(problem, fmt, error_rate=1.0)
    messages = _replayed_transcript(payload, problem, fmt)
    spans = [
        {"message": i, "start": 0, "end": len(m["text"]), "kind": "action"}
        for i, m in enumerate(messages)
        if m["role"] == "assistant"
    ]
    tools = TOOL_SCHEMAS if fmt == "openai" else None
    full = render.render_trajectory(messages, spans, tok, max_seq_len=4096, tools=tools)
    assert full is not None
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = tok(render_prompt(messages[:k], tok, tools=tools), add_special_tokens=False)["input_ids"]
        assert full.input_ids[: len(prompt)] == prompt
        # The model is trained to produce the assistant text right after that prompt, then stop.
        assert full.kinds[len(prompt)] != render.NONE


@pytest.mark.parametrize("fmt", FORMATS)
def test_untrained_tiny_model_acts_end_to_end(tiny_dir: Path, fmt: Format) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    prompts: list[str] = []

    def spy(messages: Sequence[dict[str, Any]]) -> str:
        prompts.append(render_prompt(messages, tok))
        return render_prompt(messages, tok)

    generate = hf_generate_fn(model, tok, max_new_tokens=24, render=spy)
    problems = generate_problems(2, seed=0, split="test")
    stats = evaluate_agent(generate, problems, fmt, max_steps=3)
    assert stats["n"] == 2 and stats["success_rate"] == 0.0
    assert 1 <= stats["avg_steps"] <= 3 and sum(stats["failures"].values()) == 2
    assert prompts and all(p.endswith("<|im_start|>assistant\n") for p in prompts)
    # Greedy decoding is deterministic.
    again = hf_generate_fn(model, tok, max_new_tokens=24)
    msgs = initial_messages(problems[0], fmt)
    assert again(msgs) == again(msgs)
    assert isinstance(json.dumps(stats), str)


def test_hf_generate_fn_raises_context_overflow(tiny_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    generate = hf_generate_fn(model, tok)
    long = [{"role": "user", "text": "apple " * 2000}]
    with pytest.raises(ContextOverflow):
        generate(long)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dataset_records_follow_the_contract_and_render(tiny_dir: Path, fmt: Format) -> None:
    from transformers import AutoTokenizer

    from worker.training import render

    problems = generate_problems(12, seed=0) + generate_problems(4, seed=0, split="test")
    records = dataset_records(problems, fmt, error_rate=0.5)
    assert [r["split"] for r in records] == ["train"] * 12 + ["eval"] * 4
    assert all(0.0 <= r["complexity"] <= 1.0 for r in records)
    assert min(r["complexity"] for r in records) == 0.0 and max(r["complexity"] for r in records) == 1.0
    assert len({r["id"] for r in records}) == 16 and all(r["tools"] is None for r in records)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    for record, problem in zip(records, problems, strict=True):
        assert set(record) == {"id", "messages", "spans", "tools", "complexity", "split"}
        kinds = {s["kind"] for s in record["spans"]}
        assert kinds == {"reason", "action", "observation"}
        ex = render.render_trajectory(record["messages"], record["spans"], tok, max_seq_len=1024)
        assert ex is not None and ex.n_reason > 0 and ex.n_action > 0
        # The records hold exactly the conversation the runner rebuilds when the teacher replays.
        texts = [m["text"] for m in record["messages"] if m["role"] == "assistant"]
        assert _replayed_transcript_from(texts, problem, fmt) == record["messages"]
    with_tools = dataset_records(problems[:1], fmt, include_tools=True)
    assert with_tools[0]["tools"] == (TOOL_SCHEMAS if fmt == "openai" else None)


def _replayed_transcript_from(texts: list[str], problem: Any, fmt: Format) -> list[dict[str, Any]]:
    result = run_agent(replay_generate(texts), problem, fmt=fmt)
    assert result.success
    return result.transcript
