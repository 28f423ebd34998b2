"""The `capture` job: run a teacher once over a dataset's train split and store its top-k signal in shards.

The records are rendered exactly as a distill job renders them (`data.prepare_examples` with the student's
tokenizer and template, span mode, the same ``max_seq_len``); the teacher runs under ``no_grad`` on batches of
examples, only its reason positions' hidden states go through the LM head (in chunks, as the losses do), and
`topk.top_k_signal` + `topk.encode` turn their logits into the stored rows.

Examples are cut into shards of ``shard_size`` in their rendered order. Each shard is assembled in the
attempt's scratch path and promoted by its fence (`worker.fence`) when complete, so a shard file present is a
whole one; a resumed or retried attempt skips the shards it finds and continues with the first missing one.
A stop (cancel, SIGTERM, a lost lease) is honoured between two teacher batches; the unfinished shard is dropped.
``manifest.json`` first records the plan (what was captured, with which teacher and tokenizer, how many shards);
once every shard is there it is rewritten with ``complete: true`` and the storage figures, and only then can a
distill job use the capture (`topk.OfflineSignal.load`).

With ``resources.gpus = K > 1`` the handler starts K ranks under torchrun (`capture_launch.py`) running this
module, ``python -m worker.training.capture --config … --data … --out …``: rank r takes shards r, r + K, …, each
rank promotes its own shards through the attempt's lease file (``worker.fence.FileFence``), and rank 0 writes
the plan, and the complete manifest once every rank is done. Rank 0 prints JSON lines like the trainer's
(``{"event": "metrics"}`` per shard, ``{"event": "result"}``) and exit codes are ``contract.rundir.ExitCode``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.capture import CAPTURE_MANIFEST, FORMAT_VERSION, shard_name, tokenizer_fingerprint
from contract.job_config import CaptureConfig
from contract.spans import DatasetRecord
from worker.context import BadJobInput
from worker.fence import Fence, Unfenced, discard, fence_from_env
from worker.training.checkpoint import dataset_hash
from worker.training.data import prepare_examples, read_records, supervised_counts
from worker.training.distributed import barrier, rank_and_world
from worker.training.logits import logits_fn
from worker.training.losses import final_hidden_states
from worker.training.models import check_embedding_rows, load_teacher, load_tokenizers, resolve_device
from worker.training.rank_entry import Progress, rank_parser, run_rank
from worker.training.render import REASON, RenderedExample, collate
from worker.training.topk import (
    encode,
    example_hash,
    example_key,
    id_dtype,
    read_shard,
    reason_positions,
    top_k_signal,
    write_shard,
)

PLAN_KEYS = ("format_version", "teacher_model", "student_model", "tokenizer_sha256", "records_sha256", "top_k",
             "temperature", "max_seq_len", "vocab_size", "shard_size", "examples", "shards")


@torch.no_grad()
def capture_examples(teacher: torch.nn.Module, examples: Sequence[RenderedExample], *, k: int, temperature: float,
                     vocab_size: int, batch_size: int, chunk_size: int, pad_id: int, device: torch.device,
                     should_stop: Callable[[], bool] | None = None) -> dict[str, np.ndarray] | None:
    """The encoded top-k rows of every reason position of `examples`, example by example (`topk.encode`); None
    when `should_stop` turned True between two batches (the partial shard is dropped: stopping waits for one
    teacher forward, not a whole shard)."""
    head = logits_fn(teacher)
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for lo in range(0, len(examples), batch_size):
        if should_stop is not None and lo > 0 and should_stop():
            return None
        batch = {k_: v.to(device) for k_, v in collate(examples[lo : lo + batch_size], pad_id).items()}
        attn = batch["attention_mask"].bool()
        rows = (batch["kinds"][:, 1:] == REASON) & attn[:, 1:] & attn[:, :-1]
        b, t = rows.nonzero(as_tuple=True)
        hidden = final_hidden_states(teacher, batch["input_ids"], batch["attention_mask"])[b, t]
        for c in range(0, hidden.shape[0], chunk_size):
            logits = head(hidden[c : c + chunk_size])[:, :vocab_size]
            parts.append(top_k_signal(logits, k, temperature))
    k_eff = min(k, vocab_size)
    ids = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, k_eff, dtype=torch.long)
    logp = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0, k_eff)
    tail = torch.cat([p[2] for p in parts]) if parts else torch.zeros(0)
    return encode(ids, logp, tail, vocab_size)


def run_capture(
    config: CaptureConfig,
    records: Sequence[DatasetRecord],
    out_dir: Path,
    *,
    fence: Fence | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Capture the teacher's signal for the records' train split into ``out_dir`` (resuming what is there).

    Returns {"status": "completed" | "stopped", "shards_done", "shards_skipped", "manifest"}."""
    fence = fence or Unfenced()
    say = log or (lambda _msg: None)
    rank, world = rank_and_world()
    device = resolve_device(config.resources.device)
    tokenizer, vocab_size = load_tokenizers(config.student_model, config.teacher_model)
    data = prepare_examples(records, tokenizer, max_seq_len=config.max_seq_len, mode="span",
                            syntax=config.tool_call_syntax)
    examples = data.train.examples
    if not examples:
        raise BadJobInput(f"no trainable example in the train split (skipped: {data.skipped})")
    shards = [examples[i : i + config.shard_size] for i in range(0, len(examples), config.shard_size)]
    plan: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "teacher_model": config.teacher_model, "student_model": config.student_model,
        "tokenizer_sha256": tokenizer_fingerprint(config.student_model), "records_sha256": dataset_hash(records),
        "top_k": min(config.top_k, vocab_size), "temperature": config.temperature, "max_seq_len": config.max_seq_len,
        "vocab_size": vocab_size, "shard_size": config.shard_size, "examples": len(examples), "shards": len(shards),
        "id_dtype": id_dtype(vocab_size).name, "data": data.report(),
        "supervised_tokens": sum(sum(supervised_counts(e)) for e in examples),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / CAPTURE_MANIFEST
    if manifest_path.exists():
        found = json.loads(manifest_path.read_text())
        changed = {k: (found.get(k), plan[k]) for k in PLAN_KEYS if found.get(k) != plan[k]}
        if changed:
            raise BadJobInput(f"{out_dir} holds a capture of something else (found, now): {changed}")
    elif rank == 0:
        _write_json(fence, manifest_path, {**plan, "complete": False})

    # As an online teacher runs: bf16 weights on a CUDA device that has it; the logits are fp32 either way.
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    teacher = load_teacher(config.teacher_model, device, torch.bfloat16 if bf16 else torch.float32)
    check_embedding_rows(teacher, vocab_size, "the teacher")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    done: list[int] = []
    skipped: list[int] = []
    t0 = time.perf_counter()
    for i, shard in enumerate(shards):
        dst = out_dir / shard_name(i)
        if i % world != rank:
            continue
        if dst.exists():
            skipped.append(i)
            continue
        stopped = should_stop is not None and should_stop()
        arrays = None if stopped else capture_examples(
            teacher, shard, k=config.top_k, temperature=config.temperature, vocab_size=vocab_size,
            batch_size=config.batch_size, chunk_size=config.chunk_size, pad_id=pad_id, device=device,
            should_stop=should_stop)
        if arrays is None:
            say(f"stopped after {len(done)} new shards")
            return {"status": "stopped", "shards_done": done, "shards_skipped": skipped, "manifest": plan}
        counts = [len(reason_positions(e)) for e in shard]
        scratch = fence.scratch(dst)
        try:
            write_shard(scratch, [example_key(e) for e in shard], [example_hash(e) for e in shard], counts, arrays)
            fence.promote(scratch, dst)
        finally:
            discard(scratch)
        done.append(i)
        if progress is not None:
            present = sum(1 for _ in out_dir.glob("shard-*.npz"))  # every rank's shards, resumed ones included
            elapsed = time.perf_counter() - t0
            progress({"step": present, "total": len(shards), "total_steps": len(shards), "phase": "capturing",
                      "shard": i, "eta_s": elapsed / len(done) * (len(shards) - present) / world})
    if skipped:
        say(f"resumed: skipped {len(skipped)} finished shards")
    barrier()
    missing = [i for i in range(len(shards)) if not (out_dir / shard_name(i)).exists()]
    if missing:  # a rank stopped (or failed) before its shards were done: a later attempt captures them
        return {"status": "stopped", "shards_done": done, "shards_skipped": skipped, "manifest": plan}
    if rank != 0:
        return {"status": "completed", "shards_done": done, "shards_skipped": skipped, "manifest": plan}
    if progress is not None:  # rank 0's last report may predate the other ranks' last shards
        progress({"step": len(shards), "total": len(shards), "total_steps": len(shards), "phase": "captured",
                  "eta_s": 0.0})
    manifest = {**plan, "complete": True, **storage_figures(out_dir, len(shards), plan["top_k"], vocab_size,
                                                        plan["supervised_tokens"])}
    _write_json(fence, manifest_path, manifest)
    return {"status": "completed", "shards_done": done, "shards_skipped": skipped, "manifest": manifest}


def storage_figures(folder: Path, n_shards: int, k: int, vocab_size: int, supervised: int) -> dict[str, Any]:
    """Bytes on disk, per stored (reason) position, and per supervised token (reason + action) of the captured
    examples; the raw size per position before compression."""
    total = positions = 0
    for i in range(n_shards):
        path = folder / shard_name(i)
        total += path.stat().st_size
        positions += int(read_shard(path)["counts"].sum())
    return {"bytes": total, "positions": positions,
            "bytes_per_position": total / positions if positions else 0.0,
            "bytes_per_supervised_token": total / supervised if supervised else 0.0,
            "raw_bytes_per_position": k * (id_dtype(vocab_size).itemsize + 1) + 6}


def _write_json(fence: Fence, path: Path, body: dict[str, Any]) -> None:
    scratch = fence.scratch(path)
    try:
        scratch.write_text(json.dumps(body, indent=1, sort_keys=True))
        fence.promote(scratch, path)
    finally:
        discard(scratch)


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.training.capture``: one rank of a capture under torchrun (or one process by hand)."""
    parser = rank_parser("python -m worker.training.capture", __doc__.split("\n")[0],
                         config_help="CaptureConfig as JSON", out_help="the capture folder")
    args = parser.parse_args(argv)

    def read_inputs() -> tuple[CaptureConfig, list[DatasetRecord]]:
        try:
            return CaptureConfig.model_validate_json(args.config.read_text()), read_records(args.data)
        except Exception as exc:
            raise BadJobInput(f"cannot read the capture's inputs: {exc}") from exc

    def capture(config: CaptureConfig, records: list[DatasetRecord], progress: Progress | None,
                should_stop: Callable[[], bool]) -> dict[str, Any]:
        return run_capture(config, records, args.out, fence=fence_from_env(), progress=progress,
                           should_stop=should_stop, log=lambda msg: print(msg, file=sys.stderr))

    return run_rank(read_inputs, capture)


if __name__ == "__main__":
    sys.exit(main())
