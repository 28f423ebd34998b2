"""Span rendering + masks throughput: trajectory → token ids + per-token kinds, on one CPU core.

Baseline in the same run: tokenizing the already-rendered chat string alone (what any SFT
pipeline pays). DESIGN.md §8 target: ≥ 100k tokens/s on one core. Templates: the built-in plain one,
our ChatML, and Qwen2.5's real template (tests/data/templates/; default system turn, tool responses
wrapped in user turns).

    ./dev bench render [--trajectories 200] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import ROOT, print_table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary of the benchmark tokenizer.")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from ingest import make_trajectory
    from transformers import AutoTokenizer

    from contract.formats import parse
    from worker.training.render import render_trajectory
    from worker.training.tiny import CHATML_TEMPLATE, build_tiny_model

    records = []
    for i in range(args.trajectories):
        body = make_trajectory(i, "render", 10_000)
        parsed = parse("openai", {"messages": body["messages"]})
        records.append((parsed.messages, parsed.spans))
    corpus = [m["text"] for msgs, _ in records[:50] for m in msgs]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        qwen25 = (ROOT / "tests" / "data" / "templates" / "qwen2.5.jinja").read_text(encoding="utf-8")
        for name, template in (("plain", None), ("chatml", CHATML_TEMPLATE), ("qwen2.5", qwen25)):
            model_dir = build_tiny_model(Path(tmp) / name, corpus, vocab_size=args.vocab, chat_template=template)
            tok = AutoTokenizer.from_pretrained(model_dir)
            rendered = [render_trajectory(m, s, tok, max_seq_len=1 << 20) for m, s in records[:5]]  # warm-up
            t0 = time.perf_counter()
            n_tokens = 0
            for m, s in records:
                ex = render_trajectory(m, s, tok, max_seq_len=1 << 20)
                assert ex is not None
                n_tokens += len(ex.input_ids)
            ours = time.perf_counter() - t0
            # baseline: only tokenizing the same rendered strings (no span mapping, no template work)
            texts = [tok.decode(render_trajectory(m, s, tok, max_seq_len=1 << 20).input_ids)  # type: ignore[union-attr]
                     for m, s in records]
            t0 = time.perf_counter()
            for text in texts:
                tok(text, add_special_tokens=False, return_offsets_mapping=True)
            base = time.perf_counter() - t0
            trunc_len = n_tokens // len(records) // 2
            t0 = time.perf_counter()
            kept = 0
            for m, s in records[:50]:
                ex = render_trajectory(m, s, tok, max_seq_len=trunc_len)
                kept += len(ex.input_ids) if ex else 0
            trunc = time.perf_counter() - t0
            rows.append([name, n_tokens // len(records), n_tokens / ours, n_tokens / base, ours / base,
                         kept / trunc])
            del rendered
    print_table("Rendering + masks, one CPU core (DESIGN.md §8: ≥ 100k tokens/s)",
                ["template", "tokens/traj", "render tok/s", "tokenize-only tok/s", "render / tokenize time",
                 "truncating tok/s"], rows)


if __name__ == "__main__":
    main()
