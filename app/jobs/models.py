"""Where a job's models come from, resolved when the job is submitted (``POST /v1/jobs``).

A model reference (``student_model``, ``teacher_model``) is, in this order:

- ``job:<id>``: the trained model of a distill job that succeeded (the ``final/`` folder of its run
  directory under the data dir), so a job's own result is evaluated or trained further as it is;
- a folder under the models root (``settings.models_root``, ``DISTILLERY_MODELS_ROOT``; by default
  ``<data dir>/models``, filled by ``distillery models add`` and ``distillery models tiny``): a name
  such as ``demo-student`` or ``org/name``, or an absolute path inside the root. Symlinks are followed
  and the folder must stay inside the root. A folder of a hub id's name wins over the hub;
- a Hugging Face hub id (``org/name``) kept as given. With ``HF_HUB_OFFLINE`` set, nothing can be
  downloaded, so it must already be in the local hub cache.

Anything else is refused with 422 (``model_not_found``, ``model_path_not_allowed``,
``invalid_model_reference``) and a message that says where models are looked up: a job is never
queued only to fail on a model its worker cannot load. The stored config holds the resolved absolute
path (or the hub id), which workers load without remote code.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import ValidationFailed
from app.jobs import repository as repo
from contract.rundir import FINAL

# Hugging Face repo ids: one "/", names of letters, digits, "-", "_", "." (never "..", never leading ".").
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")  # fullmatch: "a/b\n" is not one
JOB_PREFIX = "job:"


def hub_offline() -> bool:
    """True when this process may not download from the hub (``HF_HUB_OFFLINE``, as transformers reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, found the way ``huggingface_hub`` finds it."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "huggingface" / "hub"


def in_hub_cache(repo_id: str) -> bool:
    """Whether a snapshot of ``repo_id`` with a ``config.json`` is in the local hub cache."""
    snapshots = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any((s / "config.json").is_file() for s in snapshots.iterdir())


def where(root: Path | None) -> str:
    """Where models are looked up, for the messages of a refused reference."""
    local = (f"local models are folders under the models root {root} (DISTILLERY_MODELS_ROOT; "
             "'distillery models list' shows them, 'distillery models add' imports one)"
             if root is not None else "local models are disabled (no models root is configured)")
    hub = ("hub ids ('org/name') only from the local hub cache, as HF_HUB_OFFLINE is set" if hub_offline()
           else "hub ids are 'org/name'")
    return f"Models are looked up as: {local}; 'job:<id>' for a finished distill job's model; {hub}."


def _refuse(field: str, ref: str, code: str, why: str, root: Path | None) -> ValidationFailed:
    return ValidationFailed(f"{field}: {why}. {where(root)}", code=code,
                            errors=[{"field": field, "code": code, "message": why}], model=ref)


def resolve_model(ref: str, root: Path | None, field: str) -> str:
    """A hub id unchanged, or the resolved absolute path of a model folder inside ``root``."""
    parts = ref.replace("\\", "/").split("/")
    path_like = ref.startswith(("/", "~", ".")) or "\\" in ref or ".." in parts or "." in parts
    is_hub_id = not path_like and HUB_ID.fullmatch(ref) is not None and ".." not in ref
    if is_hub_id and (root is None or not (root / ref).is_dir()):  # a folder of that name under the root wins
        return ref  # loaded without remote code, offline when HF_HUB_OFFLINE is set
    not_allowed = "model_path_not_allowed"
    if ref.startswith("~"):
        raise _refuse(field, ref, not_allowed, "'~' is not expanded", root)
    if "\x00" in ref:
        raise _refuse(field, ref, not_allowed, "the path holds a NUL byte", root)
    if root is None:
        if path_like:
            raise _refuse(field, ref, not_allowed, "local model paths are disabled (no models root is configured)",
                          root)
        raise _refuse(field, ref, "invalid_model_reference", f"{ref!r} is not a hub id ('org/name')", root)
    base = root.resolve()
    candidate = Path(ref) if Path(ref).is_absolute() else base / ref
    resolved = candidate.resolve()  # follows symlinks: a link pointing out of the root is caught below
    if not resolved.is_relative_to(base):
        raise _refuse(field, ref, not_allowed, "the path leads outside the models root", root)
    if not resolved.is_dir():
        if not path_like and "/" not in ref:
            raise _refuse(field, ref, "invalid_model_reference",
                          f"{ref!r} is neither a model under the models root nor a hub id ('org/name')", root)
        raise _refuse(field, ref, "model_not_found", f"no model folder at {ref!r} under the models root", root)
    return str(resolved)


def resolve_job_output(session: Session, ref: str, settings: Settings, field: str) -> str:
    """``job:<id>`` → the absolute path of that distill job's ``final/`` model (it must have succeeded)."""
    root = settings.models_root
    try:
        job_id = uuid.UUID(ref[len(JOB_PREFIX):])
    except ValueError:
        raise _refuse(field, ref, "invalid_model_reference", f"{ref!r} is not 'job:<job id>'", root) from None
    row = repo.get_job(session, job_id)
    if row is None:
        raise _refuse(field, ref, "model_not_found", f"there is no job {job_id}", root)
    if row.kind != "distill":
        raise _refuse(field, ref, "invalid_model_reference",
                      f"job {job_id} is a {row.kind} job; only distill jobs produce a model", root)
    if row.status != "succeeded":
        raise _refuse(field, ref, "model_not_found",
                      f"job {job_id} is {row.status}; its model exists once it has succeeded", root)
    final = settings.job_dir(job_id) / FINAL
    if not (final / "config.json").is_file():
        raise _refuse(field, ref, "model_not_found", f"job {job_id} succeeded but its model folder {final} is "
                      "missing (removed, or the API does not see the workers' data dir)", root)
    return str(final.resolve())


def resolve_reference(session: Session, ref: str, settings: Settings, field: str) -> str:
    """What a job's model reference names (see the module docstring), or ``ValidationFailed``."""
    if ref.startswith(JOB_PREFIX):
        return resolve_job_output(session, ref, settings, field)
    resolved = resolve_model(ref, settings.models_root, field)
    if not Path(resolved).is_absolute() and hub_offline() and not in_hub_cache(resolved):
        raise _refuse(field, ref, "model_not_found",
                      f"{ref!r} is not under the models root and not in the local hub cache {hub_cache_dir()} "
                      "(HF_HUB_OFFLINE is set, so it cannot be downloaded); import it with "
                      f"'distillery models add <folder or .gguf file> --name {ref}'", settings.models_root)
    return resolved
