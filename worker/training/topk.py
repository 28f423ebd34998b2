"""The offline teacher signal: top-k teacher log-probs + the leftover mass per reason position, stored compactly.

**What is stored.** For each reason position t of a rendered example (the positions whose shifted label t+1 is
a REASON token), from the teacher's logits z at temperature T (z/T, the tokenizer's real vocabulary only): the
k most likely token ids S, their log-probs l_i = log softmax(z/T)_i, and the log of the leftover mass
log(1 − Σ_S p_i), computed as logsumexp over the ids outside S minus logsumexp over all (exact, no cancellation).

**Encoding** (per position, one shard = many examples in one zip of .npy arrays, LZMA-compressed):

- ids sorted ascending and delta-coded (first id, then gaps ≥ 1), in the smallest unsigned type that holds the
  vocabulary (uint16 up to 65,536 ids, else uint32), stored as separate byte planes so the high bytes of the small
  gaps compress to almost nothing;
- log-probs quantized to uint8 against the position's own range: ``q_i = round((l_max − l_i) / s)`` with
  ``s = (l_max − l_min) / 255``; ``l_max`` and ``s`` are float16 per position. Decoding gives
  ``l_max − q_i·s``: the error is at most s/2 (half a step: ``(l_max − l_min)/510``, e.g. 0.02 nats for a
  10-nat spread between the first and the k-th token) plus float16 rounding of l_max and s (≤ 2⁻¹¹ relative);
- the leftover log-mass as float16.

Decoding renormalises the k + 1 probabilities (top-k and leftover) to sum to one, so quantization never hands
the loss a distribution with more or less than unit mass. Positions are not stored: they are the reason
positions of the example, which the distill job renders itself, and each example carries a hash of its token
ids and kinds, so an example rendered differently is refused instead of trained against the wrong positions.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from contract.capture import CAPTURE_MANIFEST, FORMAT_VERSION, shard_name
from contract.job_config import DistillConfig
from worker.context import BadJobInput
from worker.training.render import REASON, RenderedExample

LEVELS = 255  # uint8 quantization steps across a position's range of log-probs


def example_key(example: RenderedExample) -> str:
    """The key of a rendered example in a capture (its record id, and the turn for a turn of its own)."""
    return f"{example.id}|{'' if example.turn is None else example.turn}"


def example_hash(example: RenderedExample) -> str:
    """A hash of what decides the example's positions and their targets: token ids and kinds."""
    h = hashlib.sha256(np.asarray(example.input_ids, dtype="<i8").tobytes())
    h.update(np.asarray(example.kinds, dtype="<i1").tobytes())
    return h.hexdigest()[:32]


def reason_positions(example: RenderedExample) -> list[int]:
    """Positions t whose label t+1 is a REASON token (the positions that get the teacher's KL)."""
    return [t for t in range(len(example.kinds) - 1) if example.kinds[t + 1] == REASON]


def top_k_signal(logits: Tensor, k: int, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher logits [n, V] (fp32) → (ids Long[n, k] ascending, log-probs [n, k] aligned with ids, leftover
    log-mass [n]) at `temperature`; -inf leftover when k covers the vocabulary."""
    z = logits.float() / temperature
    log_z = torch.logsumexp(z, dim=-1)
    k = min(k, z.shape[-1])
    vals, idx = torch.topk(z, k, dim=-1)
    tail = torch.logsumexp(z.scatter(-1, idx, float("-inf")), dim=-1) - log_z
    ids, order = idx.sort(dim=-1)
    return ids, vals.gather(-1, order) - log_z[:, None], tail


def id_dtype(vocab_size: int) -> np.dtype[Any]:
    """The smallest unsigned type that holds every id of the vocabulary."""
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def encode(ids: Tensor, logp: Tensor, tail: Tensor, vocab_size: int) -> dict[str, np.ndarray]:
    """(ids Long[n, k] ascending, log-probs [n, k], leftover [n]) → the stored arrays (see the module docstring)."""
    ids_np = ids.cpu().numpy().astype(np.int64)
    gaps = np.diff(ids_np, axis=1, prepend=0).astype(id_dtype(vocab_size))
    planes = np.ascontiguousarray(gaps.view(np.uint8).reshape(*gaps.shape, gaps.itemsize).transpose(2, 0, 1))
    lp = logp.double().cpu().numpy()
    top = lp.max(axis=1) if lp.size else np.zeros(0)
    top16 = top.astype(np.float16)
    spread = top16.astype(np.float64) - (lp.min(axis=1) if lp.size else np.zeros(0))
    # The step as stored (float16, at least its smallest normal: k = 1 or a flat top-k has no spread), so the
    # codes are computed against exactly what decoding multiplies by.
    step = np.maximum((spread / LEVELS).astype(np.float16).astype(np.float64), np.finfo(np.float16).tiny)
    q = np.clip(np.rint((top16.astype(np.float64)[:, None] - lp) / step[:, None]), 0, LEVELS).astype(np.uint8)
    return {"id_planes": planes, "q": q, "top": top16, "step": step.astype(np.float16),
            "tail": tail.cpu().numpy().astype(np.float16)}


def decode(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stored arrays → (ids int64 [n, k], log-probs float32 [n, k + 1], the last column the leftover), the k + 1
    probabilities renormalised to sum to one."""
    planes = arrays["id_planes"]
    nbytes, n, k = planes.shape
    gaps = np.ascontiguousarray(planes.transpose(1, 2, 0)).view(f"<u{nbytes}").reshape(n, k)
    ids = np.cumsum(gaps.astype(np.int64), axis=1)
    top, step = arrays["top"].astype(np.float64), arrays["step"].astype(np.float64)
    logp = top[:, None] - arrays["q"].astype(np.float64) * step[:, None]
    full = np.concatenate([logp, arrays["tail"].astype(np.float64)[:, None]], axis=1)
    with np.errstate(divide="ignore"):
        full -= np.log(np.exp(full).sum(axis=1, keepdims=True))
    return ids, full.astype(np.float32)


def write_shard(path: Path, keys: list[str], hashes: list[str], counts: list[int],
                arrays: dict[str, np.ndarray]) -> int:
    """One shard file (a zip of .npy members, LZMA): the examples' keys, hashes and reason-position counts, then
    the encoded rows of all their positions in order. Returns its size in bytes."""
    members = {"keys": np.asarray(keys, dtype=str), "hashes": np.asarray(hashes, dtype=str),
               "counts": np.asarray(counts, dtype="<u4"), **arrays}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as zf:
        for name, array in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())
    return path.stat().st_size


def read_shard(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@dataclass
class _Rows:
    """One example's rows: a slice of its shard's encoded arrays, decoded when a batch needs them (memory stays
    at the encoded size, k·(id bytes + 1) + 6 bytes per position, instead of 12·k decoded)."""

    hash: str
    arrays: dict[str, np.ndarray]  # the shard's encoded rows
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.start, self.end
        rows = {name: a[:, lo:hi] if name == "id_planes" else a[lo:hi] for name, a in self.arrays.items()}
        return decode(rows)


class OfflineSignal:
    """A capture's rows, by example key; `rows(examples)` is one micro-batch's signal in the losses' order."""

    def __init__(self, rows: dict[str, _Rows], manifest: dict[str, Any]) -> None:
        self._rows = rows
        self.manifest = manifest

    @classmethod
    def load(cls, folder: str | Path, *, temperature: float, max_seq_len: int, vocab_size: int) -> OfflineSignal:
        """Read a complete capture; `BadJobInput` when it is incomplete or was captured for another setting."""
        root = Path(folder)
        try:
            manifest = json.loads((root / CAPTURE_MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise BadJobInput(f"no readable capture in {root}: {exc}") from exc
        want = {"format_version": FORMAT_VERSION, "temperature": temperature, "max_seq_len": max_seq_len,
                "vocab_size": vocab_size, "complete": True}
        wrong = {k: (manifest.get(k), v) for k, v in want.items() if manifest.get(k) != v}
        if wrong:
            raise BadJobInput(f"the capture in {root} does not fit this job (captured, wanted): {wrong}")
        rows: dict[str, _Rows] = {}
        for i in range(int(manifest["shards"])):
            shard = read_shard(root / shard_name(i))
            encoded = {name: shard[name] for name in ("id_planes", "q", "top", "step", "tail")}
            start = 0
            for key, digest, count in zip(shard["keys"], shard["hashes"], shard["counts"], strict=True):
                end = start + int(count)
                rows[str(key)] = _Rows(str(digest), encoded, start, end)
                start = end
        return cls(rows, manifest)

    @property
    def k(self) -> int:
        return int(self.manifest["top_k"])

    def check(self, examples: list[RenderedExample]) -> None:
        """`BadJobInput` unless every example is in the capture, rendered the same way."""
        for example in examples:
            self._get(example)

    def _get(self, example: RenderedExample) -> _Rows:
        found = self._rows.get(example_key(example))
        if found is None:
            raise BadJobInput(f"example {example_key(example)!r} is not in the capture: it was captured for other "
                              "records or another rendering (run a capture for this dataset and student)")
        if found.hash != example_hash(example) or len(found) != len(reason_positions(example)):
            raise BadJobInput(f"example {example_key(example)!r} renders differently from when it was captured "
                              "(tokenizer, template or code changed): capture again")
        return found

    def rows(self, examples: list[RenderedExample], device: torch.device) -> dict[str, Tensor]:
        """{"topk_ids": Long[N, k], "topk_logp": [N, k + 1]} for the examples' reason positions, example by
        example and position by position (the order in which the losses gather KL rows)."""
        decoded = [self._get(e).decode() for e in examples]
        ids = np.concatenate([d[0] for d in decoded]) if decoded else np.zeros((0, self.k), np.int64)
        logp = np.concatenate([d[1] for d in decoded]) if decoded else np.zeros((0, self.k + 1), np.float32)
        return {"topk_ids": torch.from_numpy(ids).to(device), "topk_logp": torch.from_numpy(logp).to(device)}


def offline_signal(config: DistillConfig, examples: list[RenderedExample], vocab_size: int) -> OfflineSignal | None:
    """The capture an offline distill job trains against (checked against every train example), else None."""
    if config.loss.teacher_signal != "offline":
        return None
    if not config.loss.capture:
        raise BadJobInput("loss.teacher_signal='offline' needs loss.capture (the API fills it in at submit time)")
    signal = OfflineSignal.load(config.loss.capture, temperature=config.loss.temperature,
                                max_seq_len=config.training.max_seq_len, vocab_size=vocab_size)
    signal.check(examples)
    return signal
