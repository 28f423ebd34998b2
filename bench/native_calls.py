"""Native vs Hermes tool-call syntax: does a student trained on its own family's call syntax act as well?

A tiny student with Llama 3.2's real chat template (tests/data/templates/llama3.2.jinja, its special tokens, a BPE
trained on the fly) is trained twice on the same scripted-teacher trajectories of the synthetic shop task (one call
per turn, the form Llama's template renders natively), once with ``tool_call_syntax: native`` (it learns Llama's
bare JSON ``{"name", "parameters"}``) and once with ``hermes`` (``<tool_call>`` blocks), then run as an agent on
held-out problems through the runner, which reads each student's calls in the syntax it was trained on. Prints a
table: success rate, steps, failures, how many train records rendered natively / fell back, wall time.

    .venv/bin/python bench/native_calls.py [--steps 600] [--train 300] [--held-out 40] [--render-only]

`--render-only` skips training and prints what the native mapping costs: records rendered per second in each
syntax with the same tokenizer (the native render re-renders a turn once per call to locate its calls).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LLAMA3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
          "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]


def build_student(out_dir: Path, corpus: list[str], seed: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from worker.training.tiny import build_tokenizer

    template = (ROOT / "tests" / "data" / "templates" / "llama3.2.jinja").read_text(encoding="utf-8")
    tok = build_tokenizer(corpus, vocab_size=512, special_tokens=LLAMA3, bos_token="<|begin_of_text|>",
                          eos_token="<|end_of_text|>", pad_token="<|finetune_right_pad_id|>", chat_template=template)
    tok.save_pretrained(out_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir


def score(model_dir: Path, problems: list[Any], syntax: str) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.synthetic import evaluate_agent, hf_generate_fn
    from worker.synthetic.calls import student_call_syntax

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    generate = hf_generate_fn(model, tok, tools=None, syntax=syntax, max_new_tokens=80)
    calls = student_call_syntax(tok, syntax)
    return {"calls": calls, **evaluate_agent(generate, problems, "openai", max_steps=8, calls=calls)}


def render_speed(student: Path, records: list[Any]) -> None:
    from transformers import AutoTokenizer

    from worker.training.data import prepare_examples

    tok = AutoTokenizer.from_pretrained(student)
    print("| tool_call_syntax | records | examples | tokens | seconds | records/s | tokens/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for syntax in ("native", "hermes"):
        started = time.perf_counter()
        data = prepare_examples(records, tok, max_seq_len=4096, syntax=syntax)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        tokens = sum(len(e.input_ids) for e in data.train.examples + data.eval.examples)
        n = len(data.train) + len(data.eval)
        print(f"| {syntax} | {len(records)} | {n} | {tokens} | {elapsed:.2f} | {len(records) / elapsed:.0f} | "
              f"{tokens / elapsed:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render-only", action="store_true")
    parser.add_argument("--syntaxes", default="native,hermes", help="Which arms to train (comma-separated).")
    args = parser.parse_args()

    from contract.job_config import DistillConfig
    from worker.synthetic import dataset_records, generate_problems
    from worker.training.trainer import run_training

    train = generate_problems(args.train, seed=args.seed, split="train", max_items=2)
    held_out = generate_problems(args.held_out, seed=args.seed, split="test", max_items=2)
    records = dataset_records(train + held_out, "openai", seed=args.seed, error_rate=0.1, single_calls=True)
    corpus = [m["text"] for r in records for m in r["messages"]]
    corpus += [json.dumps({"name": c["name"], "parameters": c["arguments"]})
               for r in records for m in r["messages"] for c in m.get("tool_calls", [])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        student = build_student(Path(tmp) / "student", corpus, args.seed)
        if args.render_only:
            render_speed(student, records)
            return
        for syntax in args.syntaxes.split(","):
            config = DistillConfig.model_validate({
                "student_model": str(student),
                "loss": {"mode": "span", "weighting": "fixed"},
                "curriculum": {"schedule": "none", "seed": args.seed},
                "training": {"max_steps": args.steps, "micro_batch_size": 16, "lr": 3e-3,
                             "warmup_steps": min(25, args.steps), "min_lr_ratio": 0.0, "max_seq_len": 512,
                             "checkpoint_every": 0,
                             "eval_max_examples": 0, "action_exact_match_max": 0, "seed": args.seed,
                             "tool_call_syntax": syntax},
                "resources": {"device": "cpu"},
            })
            started = time.perf_counter()
            result = run_training(config, records, Path(tmp) / f"run-{syntax}")  # type: ignore[arg-type]
            elapsed = time.perf_counter() - started
            assert result.final_dir is not None
            data = result.final_metrics.get("data", {}).get("train", {})
            got = score(result.final_dir, held_out, syntax)
            rows.append((syntax, got, data.get("native_rendered", 0), data.get("native_fallback", 0), elapsed))
    print(f"tiny Llama-3.2-template student, {args.train} train problems, {args.steps} steps, "
          f"{args.held_out} held-out problems")
    print("| tool_call_syntax | student writes | success | avg steps | failures | native / fallback records "
          "| train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for syntax, got, native, fallback, elapsed in rows:
        print(f"| {syntax} | {got['calls']} | {got['n_success']}/{got['n']} ({got['success_rate']:.2f}) | "
              f"{got['avg_steps']:.1f} | {got['failures'] or '-'} | {native} / {fallback} | {elapsed:.0f} |")


if __name__ == "__main__":
    main()
