"""What identifies a captured teacher signal, shared by the API (which finds a capture for an offline distill
job) and the worker (which writes and checks it). Torch-free, database-free.

A capture is keyed by (dataset content hash, teacher, tokenizer + chat template, max_seq_len, temperature, k):
the tokenizer and its template are named by ``tokenizer_fingerprint``, a hash of the files that decide how text
becomes tokens (``tokenizer.json``, ``tokenizer_config.json`` with its chat template and special tokens,
``special_tokens_map.json``, ``chat_template.jinja``), so students that share those files share captures.
A capture folder holds ``manifest.json`` (``CAPTURE_MANIFEST``) and one ``shard-NNNNN.npz`` per shard.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["CAPTURE_DIR", "CAPTURE_MANIFEST", "FORMAT_VERSION", "shard_name", "tokenizer_fingerprint"]

CAPTURE_DIR = "capture"  # under the capture job's run directory
CAPTURE_MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


def tokenizer_fingerprint(model_dir: str | Path) -> str | None:
    """sha256 of what decides rendering and tokenization in a local model folder; None when there is no
    ``tokenizer.json`` to read (a hub id not in the cache, a slow tokenizer)."""
    root = Path(model_dir)
    try:
        h = hashlib.sha256((root / "tokenizer.json").read_bytes())
    except OSError:
        return None
    for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        try:
            h.update(f"\0{name}\0".encode() + (root / name).read_bytes())
        except OSError:
            h.update(f"\0{name}: absent\0".encode())
    return h.hexdigest()
