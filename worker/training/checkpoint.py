"""Training checkpoints: everything needed to resume a run exactly, written atomically, and the resume check.

A checkpoint is a directory `RunDir.checkpoint(step)` (`checkpoints/step-{N:08d}/`, see `contract.rundir`) holding

    model.safetensors   the trainable parameters (all weights, or only the LoRA adapters)
    optimizer.pt        AdamW state            scheduler.pt   LR scheduler state
    weighting.pt        span-weight state (learnable log-variances)
    rng.pt              python / numpy / torch / cuda RNG states
    sampler.json        curriculum sampler state
    meta.json           {job_id, config, dataset_hash, code_version, step, world_size, total_steps, complete: true}

It is assembled in a hidden directory of its own attempt (`checkpoints/.tmp-step-N-<attempt>`), `meta.json` is
written last, and the directory is promoted into place by the attempt's fence (`worker.fence`): an atomic rename
right after a verified check that the attempt still holds the job's lease, so a crash never leaves a half-written
`step-*` directory and an attempt whose lease moved on never publishes one (its meta records the attempt and lease
token). `contract.rundir.list_checkpoints` also insists on `complete: true`. Only the newest `keep` checkpoints are
kept. Every file loads with
`weights_only=True`. The run's other files go through the same fence: metric lines (`append_row`, `trim_rows`)
after a check, reports (`write_json`) and the final model (`promoted`) assembled aside and promoted.
`check_resumable` refuses (``BadJobInput``) a checkpoint of other records or of a
config that changed in what the saved state depends on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from contract.job_config import DistillConfig
from contract.rundir import RunDir, append_metrics, list_checkpoints, trim_metrics
from worker.context import BadJobInput
from worker.fence import Fence, current_fence, discard

# Config fields that must match for a checkpoint to be resumed (the rest, e.g. max_steps, may change).
RESUME_KEYS = ("student_model", "teacher_model", "loss", "curriculum")
RESUME_TRAINING_KEYS = ("micro_batch_size", "grad_accum_steps", "max_seq_len", "seed", "lora")


def dataset_hash(records: Iterable[Mapping[str, Any]]) -> str:
    """Content hash of the records a run trains on (order-independent: sorted by id)."""
    keyed = sorted(
        (
            json.dumps(
                {k: r.get(k) for k in ("id", "messages", "spans", "tools", "complexity", "split")},
                sort_keys=True,
                ensure_ascii=False,
            )
            for r in records
        ),
    )
    digest = hashlib.sha256()
    for line in keyed:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def code_version() -> str:
    """`git describe` of the checkout when available, else the installed package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return "git:" + out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return "distillery " + version("distillery")
    except Exception:
        return "unknown"


# -- RNG ------------------------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    np_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    state: dict[str, Any] = {
        "python_version": version,
        "python_keys": torch.tensor(keys, dtype=torch.int64),
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_cached_gaussian": float(np_state[4]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate((state["python_version"], tuple(state["python_keys"].tolist()), state["python_gauss"]))
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- model state ----------------------------------------------------------------------------------------


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the optimizer updates (everything for full fine-tuning, adapters for LoRA)."""
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != wanted:
        missing, extra = sorted(wanted - set(tensors))[:5], sorted(set(tensors) - wanted)[:5]
        raise BadJobInput(f"checkpoint does not match the model: missing {missing}, unexpected {extra}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


# -- save / find / load ---------------------------------------------------------------------------------


def save_checkpoint(
    out_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    weighting: torch.nn.Module,
    sampler_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int,
    fence: Fence | None = None,
    gathered: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> Path:
    """Write checkpoint `step` and promote it atomically (``worker.fence.LeaseLost`` when the attempt's lease
    is gone: nothing is published), then prune older ones; returns its directory. ``gathered`` = (trainable
    tensors, optimizer state) of a sharded student (``worker.training.sharding``), written instead of the
    model's and optimizer's own state."""
    fence = fence or current_fence()
    fence.check()  # a lost lease costs no write at all
    final = RunDir(Path(out_dir)).checkpoint(step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{fence.label}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors, optimizer_state = gathered if gathered is not None else (trainable_state(model), optimizer.state_dict())
    save_file(tensors, str(tmp / "model.safetensors"))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(weighting.state_dict(), tmp / "weighting.pt")
    torch.save(capture_rng_state(), tmp / "rng.pt")
    (tmp / "sampler.json").write_text(json.dumps(sampler_state))
    meta = {**meta, **fence.stamp(), "step": step, "complete": True}
    with open(tmp / "meta.json", "w") as fh:  # written last: its presence marks a finished directory
        json.dump(meta, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    fence.promote(tmp, final)  # replaces a re-saved step (e.g. stop right after a periodic save)
    prune_checkpoints(out_dir, keep, own=fence.label)
    return final


# -- the run's other files, behind the same fence ----------------------------------------------------------


def check_lease(fence: Fence | None = None) -> None:
    """``worker.fence.LeaseLost`` unless the attempt still holds the lease (before a write that is not promoted)."""
    (fence or current_fence()).check()


def append_row(path: Path, row: dict[str, Any], fence: Fence | None = None) -> None:
    """One line of ``metrics.jsonl``, once the fence passes."""
    check_lease(fence)
    append_metrics(path, row)


def trim_rows(path: Path, last_step: int, fence: Fence | None = None) -> None:
    """``contract.rundir.trim_metrics`` (a resumed run drops the lines after its checkpoint), fenced."""
    check_lease(fence)
    trim_metrics(path, last_step)


@contextlib.contextmanager
def promoted(dst: Path, fence: Fence | None = None) -> Iterator[Path]:
    """A hidden scratch path to write ``dst`` (file or directory) into; promoted by the fence when the block
    ends without error, removed when it raises."""
    fence = fence or current_fence()
    fence.check()
    scratch = fence.scratch(dst)
    try:
        yield scratch
    except BaseException:
        discard(scratch)
        raise
    fence.promote(scratch, dst)


def write_json(path: Path, data: Any, fence: Fence | None = None) -> None:
    """A report (``eval_before.json``, ``eval_report.json``), written whole and promoted."""
    with promoted(path, fence) as scratch:
        scratch.write_text(json.dumps(data, indent=2))


def find_latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def prune_checkpoints(out_dir: Path, keep: int, own: str | None = None) -> None:
    """Keep the newest ``keep`` checkpoints; remove the temp dirs of other attempts (``own``: this one's label)."""
    for _, path in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    root = RunDir(Path(out_dir)).checkpoints
    for stale in root.glob(".tmp-*"):  # leftovers of a crash mid-save, or of an attempt whose lease moved on
        if own is not None and stale.name.endswith(f"-{own}"):
            continue
        shutil.rmtree(stale, ignore_errors=True)


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "meta.json").read_text())


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    weighting: torch.nn.Module,
    sharded_owner: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore model/optimizer/scheduler/weighting/RNG in place; returns (meta, sampler_state).
    ``sharded_owner``: the model is an FSDP2 student and this module holds it and the span weights (every rank
    calls this; the gathered files are scattered back, see ``worker.training.sharding``)."""
    path = Path(path)
    tensors = load_file(str(path / "model.safetensors"))
    optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    if sharded_owner is not None:
        from worker.training.sharding import load_full_state

        load_full_state(model, sharded_owner, optimizer, tensors, optimizer_state)
    else:
        load_trainable_state(model, tensors)
        optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))
    weighting.load_state_dict(torch.load(path / "weighting.pt", map_location="cpu", weights_only=True))
    restore_rng_state(torch.load(path / "rng.pt", map_location="cpu", weights_only=True))
    sampler_state = json.loads((path / "sampler.json").read_text())
    return read_meta(path), sampler_state


def check_resumable(meta: dict[str, Any], config: DistillConfig, data_hash: str, world: int) -> None:
    """Refuse (``BadJobInput``) to resume a checkpoint of other records, another world size, or a config
    that changed in what the saved state depends on."""
    if meta.get("dataset_hash") != data_hash:
        raise BadJobInput("the checkpoint in out_dir was trained on different records (dataset hash differs)")
    old, new = meta.get("config", {}), config.model_dump(mode="json")
    changed = [k for k in RESUME_KEYS if old.get(k) != new[k]]
    changed += [f"training.{k}" for k in RESUME_TRAINING_KEYS if old.get("training", {}).get(k) != new["training"][k]]
    if meta.get("world_size", 1) != world:
        changed.append("world_size")
    parallelism = new.get("resources", {}).get("parallelism", "ddp")
    if world > 1 and old.get("resources", {}).get("parallelism", "ddp") != parallelism:
        changed.append("resources.parallelism")
    if changed:
        raise BadJobInput(f"cannot resume the checkpoint in out_dir: config changed in {', '.join(changed)}")
