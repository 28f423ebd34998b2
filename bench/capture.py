"""Offline teacher signal: storage per supervised token, the top-k KL gap, and the distill-step speedup.

Builds a tiny student and a larger teacher from configs (no downloads), renders the built-in synthetic
tool-use dataset, and for k = 8 / 32 / 64 (``--ks``) captures the teacher's top-k signal exactly as a
``capture`` job does (`worker.training.capture.run_capture`). It prints, per k and per teacher (the random
teacher, and the same teacher with its output layer scaled ×``--sharpen`` so its distribution is peaked like
a trained model's):

- bytes on disk per stored reason position and per supervised token (reason + action) of the captured examples;
- the KL gap: (full-vocabulary KL − top-k estimate) / full KL, summed over the reason positions of every train
  example, student and teacher as built (the estimate includes the storage's quantization);

and the time of one distill step (forward + loss + backward of a micro-batch) with the teacher run online vs
read from the capture, in the same process on the same batches.

    .venv/bin/python bench/capture.py [--examples 32] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_models(root: Path, sharpen: float) -> tuple[Path, dict[str, Path]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.synthetic import dataset_records, generate_problems
    from worker.training.tiny import CHATML_TEMPLATE, build_tiny_model

    records = dataset_records(generate_problems(40, seed=7, split="train", max_items=2), "openai")
    corpus = ["".join(f"<|im_start|>{m['role']}\n{m['text']}<|im_end|>\n" for m in r["messages"]) for r in records]
    student = build_tiny_model(root / "student", corpus, chat_template=CHATML_TEMPLATE, seed=0)
    teacher = build_tiny_model(root / "teacher", corpus, hidden_size=256, num_layers=4, intermediate_size=768,
                               chat_template=CHATML_TEMPLATE, seed=1)
    model = AutoModelForCausalLM.from_pretrained(teacher)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharpen)
    model.save_pretrained(root / "peaked")
    AutoTokenizer.from_pretrained(teacher).save_pretrained(root / "peaked")
    return student, {"random": teacher, f"peaked (head ×{sharpen:g})": root / "peaked"}


def reason_sum(student: Any, examples: list[Any], pad_id: int, vocab: int, **kw: Any) -> float:
    import torch

    from worker.training.losses import compute_span_losses
    from worker.training.render import collate

    total = 0.0
    with torch.no_grad():
        for lo in range(0, len(examples), 4):
            part = examples[lo : lo + 4]
            batch = collate(part, pad_id)
            signal = kw.get("signal")
            if signal is not None:
                batch.update(signal.rows(part, torch.device("cpu")))
            total += float(compute_span_losses(student, batch, teacher=kw.get("teacher"), vocab_size=vocab).reason_sum)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=32, help="synthetic trajectories captured")
    parser.add_argument("--ks", default="8,32,64")
    parser.add_argument("--sharpen", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=10, help="timed distill steps per mode")
    args = parser.parse_args()

    import torch

    from contract.job_config import CaptureConfig
    from worker.synthetic import dataset_records, generate_problems
    from worker.training.capture import run_capture
    from worker.training.data import prepare_examples, supervised_counts
    from worker.training.losses import compute_span_losses
    from worker.training.models import load_teacher, load_tokenizers
    from worker.training.render import collate
    from worker.training.topk import OfflineSignal

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    student_dir, teachers = build_models(root, args.sharpen)
    records = dataset_records(generate_problems(args.examples, seed=3, split="train", max_items=2), "openai")
    tokenizer, vocab = load_tokenizers(str(student_dir), None)
    examples = prepare_examples(records, tokenizer, max_seq_len=512).train.examples
    supervised = sum(sum(supervised_counts(e)) for e in examples)
    student = load_teacher(student_dir)  # frozen copy: the KL values only
    pad_id = tokenizer.pad_token_id
    rows, captures = [], {}
    for name, teacher_dir in teachers.items():
        teacher = load_teacher(teacher_dir)
        full = reason_sum(student, examples, pad_id, vocab, teacher=teacher)
        for k in [int(x) for x in args.ks.split(",")]:
            out = root / f"capture-{name.split()[0]}-{k}"
            config = CaptureConfig.model_validate({"teacher_model": str(teacher_dir), "student_model": str(student_dir),
                                                   "top_k": k, "max_seq_len": 512, "resources": {"device": "cpu"}})
            t0 = time.perf_counter()
            manifest = run_capture(config, records, out)["manifest"]
            took = time.perf_counter() - t0
            signal = OfflineSignal.load(out, temperature=1.0, max_seq_len=512, vocab_size=vocab)
            captures[(name, k)] = signal
            gap = (full - reason_sum(student, examples, pad_id, vocab, signal=signal)) / full
            rows.append([name, k, manifest["positions"], manifest["raw_bytes_per_position"],
                         round(manifest["bytes_per_position"], 1), round(manifest["bytes"] / supervised, 1),
                         f"{100 * gap:.2f}%", f"{manifest['positions'] / took:,.0f}"])
    print(f"vocabulary {vocab}, {len(examples)} examples, {supervised} supervised tokens "
          f"({rows[0][2]} reason positions)")
    print_table("Offline teacher signal: storage and KL gap",
                ["teacher", "k", "positions", "raw B/position", "B/position on disk", "B/supervised token",
                 "KL gap vs full", "positions/s captured"], rows)

    # One distill step (forward, loss, backward) on the same micro-batches: teacher online vs the capture.
    student_train = load_teacher(student_dir).train().requires_grad_(True)
    teacher = load_teacher(next(iter(teachers.values())))
    signal = captures[(next(iter(teachers)), 32 if 32 in [int(x) for x in args.ks.split(",")] else
                       int(args.ks.split(",")[0]))]
    batches = [examples[i : i + 4] for i in range(0, len(examples), 4)]

    def step(part: list[Any], offline: bool) -> None:
        batch = collate(part, pad_id)
        if offline:
            batch.update(signal.rows(part, torch.device("cpu")))
        sums = compute_span_losses(student_train, batch, teacher=None if offline else teacher, vocab_size=vocab)
        (sums.reason_sum + sums.action_sum).backward()

    timings = {}
    for mode in ("online", "offline"):
        step(batches[0], mode == "offline")  # warm-up
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(batches[i % len(batches)], mode == "offline")
        timings[mode] = (time.perf_counter() - t0) / args.steps
    print_table(f"Distill step, micro-batch of 4, CPU, 1 thread (teacher {teachers and 'hidden 256 × 4 layers'}, "
                "student hidden 64 × 2 layers)",
                ["teacher signal", "ms/step", "speedup"],
                [["online (teacher forward each step)", round(1000 * timings["online"], 1), 1.0],
                 ["offline (capture, k=32)", round(1000 * timings["offline"], 1),
                  round(timings["online"] / timings["offline"], 2)]])


if __name__ == "__main__":
    main()
