"""Native tool-call rendering per family of the template matrix: structured calls go to the family's real chat
template, and what the family's documented tool parser (tests/worker/tool_parsers.py) reads back from the
rendered assistant text is the trajectory's calls; every call block is `action`, tool output untrained, the end
of turn `action`. Templates that cannot take structured calls fall back to the canonical text and say so.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract.formats import parse
from tests.worker.families import FAMILIES, Family, build_family_tokenizer
from tests.worker.tool_parsers import PARSERS
from worker.training.native import Support, assistant_pieces, native_support
from worker.training.render import ACTION, NONE, RenderedExample, RenderError, render_examples
from worker.training.tiny import build_tokenizer

NESTED = {"item": "pears", "filters": {"colour": ["green", "red"], "size": {"min": 1, "max": None}}, "café": "ünï"}


def _call(cid: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def _parallel_body() -> dict[str, Any]:
    """Parallel calls (one with nested arguments) after a thought, then a call with no arguments."""
    return {"messages": [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": "What do apples and pears cost, and what time is it?"},
        {"role": "assistant", "content": "I need both prices.",
         "tool_calls": [_call("c1", "lookup", {"item": "apples"}), _call("c2", "lookup", NESTED)]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
        {"role": "tool", "tool_call_id": "c2", "content": "4"},
        {"role": "assistant", "content": "", "tool_calls": [_call("c3", "clock", {})]},
        {"role": "tool", "tool_call_id": "c3", "content": "noon"},
        {"role": "assistant", "content": "Apples cost 3 and pears 4; it is noon."}]}


def _single_body() -> dict[str, Any]:
    """One call per turn, nothing beside it: the form every template with calls can show whole."""
    return {"messages": [
        {"role": "system", "content": "You are a shop assistant."},
        {"role": "user", "content": "What do pears cost, and what time is it?"},
        {"role": "assistant", "content": "", "tool_calls": [_call("c1", "lookup", NESTED)]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "assistant", "content": "", "tool_calls": [_call("c2", "clock", {})]},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        {"role": "assistant", "content": "Pears cost 4; it is noon."}]}


def _call_only_body() -> dict[str, Any]:
    """A user turn and one call, no tool turn: renderable by templates that refuse tool turns."""
    return {"messages": [{"role": "user", "content": "What do pears cost?"},
                         {"role": "assistant", "content": "", "tool_calls": [_call("c1", "lookup", NESTED)]}]}


def _trajectory(body: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    parsed = parse("openai", body)
    return list(parsed.messages), list(parsed.spans)


BODIES = [_parallel_body(), _single_body(), _call_only_body()]


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    corpus = [m["text"] for b in BODIES for m in _trajectory(b)[0]] * 3
    return {f.name: build_family_tokenizer(f, [*corpus, f.template_text()]) for f in FAMILIES}


def _segments(family: Family, text: str) -> list[tuple[int, int]]:
    """Char ranges of the assistant turns in a rendered text: from the family's header to its end of turn."""
    out, pos = [], 0
    headers = [h for h in (family.header, family.header_after_tool) if h]
    while True:
        found = [(at, h) for h in headers if (at := text.find(h, pos)) >= 0]
        if not found:
            return out
        at, header = min(found)
        start = at + len(header)
        end = text.find(family.eot, start)
        end = len(text) if end < 0 else end
        out.append((start, end))
        pos = end


def _kinds_over(tok: Any, ex: RenderedExample, text: str, a: int, b: int) -> set[int]:
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ex.input_ids
    return {k for (s, e), k in zip(enc["offset_mapping"], ex.kinds, strict=True) if s < b and e > a and e > s}


def _expected_calls(messages: list[Any]) -> list[tuple[str, Any]]:
    return [(c["name"], c["arguments"]) for m in messages for c in m.get("tool_calls", [])]


def _check_example(family: Family, tok: Any, ex: RenderedExample, messages: list[Any], syntax: str) -> None:
    text = tok.decode(ex.input_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    found = []
    for a, b in _segments(family, text):
        for name, arguments, s, e in PARSERS[syntax](text[a:b]):
            found.append((name, arguments))
            assert _kinds_over(tok, ex, text, a + s, a + e) == {ACTION}, (family.name, text[a + s : a + e])
    assert found == _expected_calls(messages), (family.name, text)
    pos = 0
    for m in messages:
        if m["role"] == "tool":  # observations are never trained
            at = text.find(m["text"], pos)
            assert at >= 0
            assert _kinds_over(tok, ex, text, at, at + len(m["text"])) == {NONE}
            pos = at + len(m["text"])
    eot = tok(family.eot, add_special_tokens=False)["input_ids"]
    ends = sum(1 for t in range(len(ex.input_ids) - len(eot) + 1)
               if ex.input_ids[t : t + len(eot)] == eot and ex.kinds[t + len(eot) - 1] == ACTION)
    assert ends == sum(m["role"] == "assistant" for m in messages), (family.name, text)


NATIVE = [f for f in FAMILIES if f.tool_calls is not None]
FALLBACK = [f for f in FAMILIES if f.tool_calls is None]


@pytest.mark.parametrize("family", NATIVE, ids=lambda f: f.name)
def test_native_families_write_calls_their_parser_reads_back(family: Family, tokenizers: dict[str, Any]) -> None:
    tok = tokenizers[family.name]
    assert native_support(tok).calls
    bodies = [_parallel_body(), _single_body()] if family.parallel_calls else [_single_body()]
    for body in bodies:
        messages, spans = _trajectory(body)
        result = render_examples(messages, spans, tok, max_seq_len=100_000)
        assert (result.stats.native_rendered, result.stats.native_fallback) == (1, 0), result.note
        assert len(result.examples) == 1
        _check_example(family, tok, result.examples[0], messages, str(family.tool_calls))
        # the stored form is Hermes: the native render equals the canonical one exactly for Hermes families
        hermes = render_examples(messages, spans, tok, max_seq_len=100_000, syntax="hermes")
        assert hermes.stats.native_rendered == hermes.stats.native_fallback == 0
        same = hermes.examples[0].input_ids == result.examples[0].input_ids
        assert same == (family.tool_calls == "hermes")


@pytest.mark.parametrize("family", [f for f in NATIVE if not f.parallel_calls], ids=lambda f: f.name)
def test_parallel_calls_a_template_refuses_fall_back(family: Family, tokenizers: dict[str, Any]) -> None:
    messages, spans = _trajectory(_parallel_body())
    result = render_examples(messages, spans, tokenizers[family.name], max_seq_len=100_000)
    assert (result.stats.native_rendered, result.stats.native_fallback) == (0, 1)
    assert result.note is not None and "single tool-calls" in result.note
    _check_example(family, tokenizers[family.name], result.examples[0], messages, "hermes")


@pytest.mark.parametrize("family", FALLBACK, ids=lambda f: f.name)
def test_templates_without_calls_fall_back_and_say_so(family: Family, tokenizers: dict[str, Any]) -> None:
    tok = tokenizers[family.name]
    support = native_support(tok)
    assert not support.calls and support.reason
    messages, spans = _trajectory(_call_only_body())
    result = render_examples(messages, spans, tok, max_seq_len=100_000)
    assert (result.stats.native_rendered, result.stats.native_fallback) == (0, 1)
    assert result.note is not None and "canonical Hermes text" in result.note
    _check_example(family, tok, result.examples[0], messages, "hermes")
    messages, spans = _trajectory(_parallel_body())
    if "tool" in family.refuses:  # with tool turns the canonical render is refused, as before
        with pytest.raises(RenderError):
            render_examples(messages, spans, tok, max_seq_len=100_000)
        return
    result = render_examples(messages, spans, tok, max_seq_len=100_000)
    assert result.stats.native_fallback == 1
    if result.stats.context_not_verbatim == result.stats.split_turns == 0:  # the template shows every turn
        _check_example(family, tok, result.examples[0], messages, "hermes")


def test_plain_template_writes_hermes_without_a_fallback() -> None:
    messages, spans = _trajectory(_parallel_body())
    tok = build_tokenizer([m["text"] for m in messages] * 3)
    result = render_examples(messages, spans, tok, max_seq_len=100_000)
    assert (result.stats.native_rendered, result.stats.native_fallback) == (0, 0) and result.note is None
    plain = Family("plain", "", [], None, "</s>", None, "<|assistant|>\n", "</s>")
    _check_example(plain, tok, result.examples[0], messages, "hermes")


def test_assistant_pieces_split_the_canonical_text() -> None:
    messages, _ = _trajectory(_parallel_body())
    text = messages[2]["text"]
    pieces = assistant_pieces(messages[2])
    assert pieces is not None
    assert [(p.kind, text[p.start : p.end]) for p in pieces] == [
        ("text", "I need both prices."),
        ("call", '<tool_call>\n{"name": "lookup", "arguments": {"item": "apples"}}\n</tool_call>'),
        ("call", text[text.rindex("<tool_call>") :])]
    # blocks are matched by name (stored arguments may have their keys reordered), found from `calls_at` or the end
    other = assistant_pieces({**messages[2], "text": text.replace("apples", "plums")})
    assert other is not None and [(p.kind, p.call) for p in other] == [(p.kind, p.call) for p in pieces]
    assert assistant_pieces({k: v for k, v in messages[2].items() if k != "calls_at"}) == pieces
    # a text whose blocks do not match its calls is not in canonical form: it cannot go native
    assert assistant_pieces({**messages[2], "text": text.replace('"lookup"', '"search"', 1)}) is None


def test_a_think_block_goes_to_reasoning_content_where_the_template_reads_it(tokenizers: dict[str, Any]) -> None:
    body = _single_body()
    body["messages"][2]["reasoning_content"] = "Pears first."
    messages, spans = _trajectory(body)
    for name in ("qwen3", "qwen2.5"):
        tok = tokenizers[name]
        assert native_support(tok) == Support(True, False, name == "qwen3")
        result = render_examples(messages, spans, tok, max_seq_len=100_000)
        assert result.stats.native_rendered == 1
        ex = result.examples[0]
        text = tok.decode(ex.input_ids, skip_special_tokens=False)
        at = text.index("Pears first.")
        assert text[:at].endswith("<think>\n")
        assert _kinds_over(tok, ex, text, at, at + len("Pears first.")) == {1}  # REASON


def test_masks_show_shows_the_native_rendering_or_the_fallback(tokenizers: dict[str, Any], tmp_path: Any) -> None:
    from worker.training.inspect import show_masks

    messages, spans = _trajectory(_single_body())
    for name, expect in (("llama3.2", "tool calls: native"), ("phi3", "tool calls: FALLBACK")):
        tokenizers[name].save_pretrained(tmp_path / name)
        text = show_masks(messages, spans, None, str(tmp_path / name), color=False)
        assert text.startswith(expect), text[:200]
        native = '⟦A:{"name": "clock", "parameters": {}}<|eot_id|>⟧' in text
        assert native == (name == "llama3.2"), text
    hermes = show_masks(messages, spans, None, str(tmp_path / "llama3.2"), color=False, syntax="hermes")
    assert hermes.startswith("tool calls: canonical Hermes text") and "<tool_call>" in hermes


def test_the_runner_reads_a_llama_students_calls_and_stores_them_canonically(tokenizers: dict[str, Any]) -> None:
    from worker.synthetic import assistant_texts, make_problem, run_agent, teacher_payload
    from worker.synthetic.calls import student_call_syntax
    from worker.synthetic.runner import render_prompt

    llama = tokenizers["llama3.2"]
    assert student_call_syntax(llama) == "llama3_json" and student_call_syntax(llama, "hermes") == "hermes"
    assert student_call_syntax(tokenizers["qwen3"]) == "hermes" and student_call_syntax(tokenizers["phi3"]) == "hermes"
    problem = make_problem("total", (("apple", 3), ("pear", 2)))
    payload = teacher_payload(problem, single_calls=True, error_rate=0.0)
    replies = []
    for text in assistant_texts(payload):  # the teacher's turns written the way a native Llama student writes them
        calls = PARSERS["hermes"](text)
        replies.append("; ".join(json.dumps({"name": n, "parameters": a}) for n, a, _, _ in calls) or text)
    prompts: list[str] = []

    def generate(messages: list[Any]) -> str:
        prompts.append(render_prompt(messages, llama))
        return replies.pop(0)

    result = run_agent(generate, problem, calls="llama3_json")
    assert result.success, result
    stored = [m for m in result.transcript if m["role"] == "assistant" and m.get("tool_calls")]
    assert stored and all(m["text"].startswith("<tool_call>\n") for m in stored)  # canonical Hermes form
    assert '{"name": "lookup", "parameters": {"item": "apple"}}<|eot_id|>' in prompts[-1]  # rendered back natively
    assert "<tool_call>" not in prompts[-1]


def test_the_job_metrics_count_native_and_fallback_records(tokenizers: dict[str, Any]) -> None:
    from worker.training.data import prepare_examples

    records = [{"id": name, "messages": messages, "spans": spans, "tools": None, "split": "train"}
               for name, (messages, spans) in (("single", _trajectory(_single_body())),
                                               ("parallel", _trajectory(_parallel_body())))]
    llama = prepare_examples(records, tokenizers["llama3.2"], max_seq_len=4096).report()["train"]
    assert (llama["native_rendered"], llama["native_fallback"]) == (1, 1)  # Llama refuses the parallel calls
    hermes = prepare_examples(records, tokenizers["llama3.2"], max_seq_len=4096, syntax="hermes").report()["train"]
    assert (hermes["native_rendered"], hermes["native_fallback"]) == (0, 0)
    assert hermes["examples"] == llama["examples"] == 2


def test_hf_generate_fn_tells_the_runner_its_students_call_syntax(tokenizers: dict[str, Any]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from worker.synthetic import evaluate_agent, hf_generate_fn, make_problem

    tok = tokenizers["llama3.2"]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    native = hf_generate_fn(model, tok, max_new_tokens=4)
    assert getattr(native, "call_syntax", None) == "llama3_json"
    assert getattr(hf_generate_fn(model, tok, syntax="hermes"), "call_syntax", None) == "hermes"
    stats = evaluate_agent(native, [make_problem("total", (("apple", 1),))], "openai", max_steps=2)
    assert stats["n"] == 1 and stats["n_success"] == 0  # untrained: runs to the end, fails honestly


def test_qwen3_turns_with_calls_whose_reasoning_the_history_drops_are_trained_natively_alone(
        tokenizers: dict[str, Any]) -> None:
    body = {"messages": [
        {"role": "user", "content": "Price of pears?"},
        {"role": "assistant", "content": "Let me check.", "reasoning_content": "Need lookup.",
         "tool_calls": [_call("c1", "lookup", {"item": "pears"})]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "assistant", "content": "Pears cost 4."},
        {"role": "user", "content": "And apples?"},
        {"role": "assistant", "content": "", "reasoning_content": "Lookup again.",
         "tool_calls": [_call("c2", "lookup", {"item": "apples"})]},
        {"role": "tool", "tool_call_id": "c2", "content": "3"},
        {"role": "assistant", "content": "Apples cost 3."}]}
    messages, spans = _trajectory(body)
    tok = tokenizers["qwen3"]
    result = render_examples(messages, spans, tok, max_seq_len=100_000)
    assert (result.stats.native_rendered, result.stats.split_turns, result.stats.unrendered_turns) == (1, 1, 0)
    alone = next(ex for ex in result.examples if ex.turn == 1)
    text = tok.decode(alone.input_ids, skip_special_tokens=False)
    at = text.index("Need lookup.")
    assert _kinds_over(tok, alone, text, at, at + len("Need lookup.")) == {1}  # its reasoning is trained
    calls = PARSERS["hermes"](text)
    assert [(n, a) for n, a, _, _ in calls] == [("lookup", {"item": "pears"})]
    assert _kinds_over(tok, alone, text, calls[0][2], calls[0][3]) == {ACTION}


@pytest.mark.parametrize("family", NATIVE, ids=lambda f: f.name)
def test_the_fast_call_location_agrees_with_the_exact_one(family: Family, tokenizers: dict[str, Any]) -> None:
    from worker.training.native import _additions, _call_ranges, native_conversation
    from worker.training.template import apply_template

    tok = tokenizers[family.name]
    support = native_support(tok)
    body = _parallel_body() if family.parallel_calls else _single_body()
    messages, _ = _trajectory(body)
    conv = native_conversation(messages, support)
    rendered = apply_template(tok, conv, None)
    for k, m in enumerate(messages):
        pieces = assistant_pieces(m) if m.get("tool_calls") else None
        if pieces is None:
            continue
        exact = [(a, b) for _, a, b in _additions(m, pieces, support, conv, k, tok, None)]
        assert _call_ranges(messages, k, pieces, support, conv, tok, None, rendered, 0) == exact
        assert [PARSERS[str(family.tool_calls)](rendered[a:b])[0][:2] for a, b in exact] == [
            (c["name"], c["arguments"]) for c in m["tool_calls"]]


def test_the_masks_show_command_prints_the_native_rendering(tokenizers: dict[str, Any], tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from cli.masks import masks_cli  # one command: typer runs it without its name

    messages, spans = _trajectory(_single_body())
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"messages": messages, "spans": spans}), encoding="utf-8")
    tokenizers["llama3.2"].save_pretrained(tmp_path / "tok")
    args = ["--tokenizer", str(tmp_path / "tok"), "--file", str(record), "--no-color"]
    out = CliRunner().invoke(masks_cli, args)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("tool calls: native") and '"parameters": {}' in out.output
    out = CliRunner().invoke(masks_cli, [*args, "--tool-call-syntax", "hermes"])
    assert out.exit_code == 0 and "<tool_call>" in out.output and '"parameters"' not in out.output
    assert CliRunner().invoke(masks_cli, [*args, "--tool-call-syntax", "xml"]).exit_code == 2
