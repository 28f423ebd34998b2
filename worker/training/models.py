"""Loading models and tokenizers for training and evaluation: offline-aware, never remote code.

`load_tokenizers` checks a teacher's vocabulary against the student's (`contract.vocab`) before any
weights are loaded; `load_student` adds gradient checkpointing and LoRA; `load_teacher` freezes.
A model or tokenizer that cannot be found or read raises `ModelLoadError` (permanent: retrying the job
cannot make it appear) naming the reference and how it was looked up; a model with fewer embedding rows
than its tokenizer has tokens, or whose architecture has no known post-head logit transform
(`contract.architectures`), raises `BadJobInput` — the latter from its config, before any weights load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from contract.architectures import UnsupportedArchitecture, logit_transform
from contract.vocab import check_tokenizer_compatibility, real_vocab_size
from worker.context import BadJobInput, ModelLoadError

if TYPE_CHECKING:
    from contract.job_config import DistillConfig


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _load_errors() -> tuple[type[Exception], ...]:
    """What transformers raises for a reference it cannot find or read: OSError (missing files, offline
    hub ids, malformed repo ids), ValueError (no config / unknown model type / no tokenizer files) and
    safetensors' error for a damaged weights file."""
    from safetensors import SafetensorError

    return OSError, ValueError, SafetensorError


def _load_error(what: str, ref: str | Path, exc: Exception) -> ModelLoadError:
    """A ModelLoadError that names the reference, says how it was looked up, and what to check."""
    ref = str(ref)
    models_root = "local models are folders under DISTILLERY_MODELS_ROOT, at the same path on the API and the worker"
    if Path(ref).is_dir():
        how = f"tried as a local folder, which exists but could not be read as a {what}"
        hint = "check that it holds a complete save_pretrained() export"
    elif Path(ref).is_absolute() or ref.startswith((".", "~")):
        how = "tried as a local folder, which does not exist on this worker"
        hint = models_root
    else:
        how = "tried as a Hugging Face hub id, as there is no folder of that name on this worker"
        if _offline():
            hint = "HF_HUB_OFFLINE is set, so only the local hub cache was searched and it is not there"
        else:
            hint = "the hub could not provide it (no such repo, no access, or no network)"
        hint += f"; {models_root}"
    cause = (str(exc).strip().splitlines() or [""])[0]  # transformers' messages run over several lines
    return ModelLoadError(f"cannot load the {what} {ref!r}: {how}; {hint} ({type(exc).__name__}: {cause})")


def _from_pretrained(loader: Any, what: str, ref: str | Path, **kwargs: Any) -> Any:
    kwargs.setdefault("trust_remote_code", False)
    kwargs.setdefault("local_files_only", _offline())
    try:
        return loader.from_pretrained(str(ref), **kwargs)
    except _load_errors() as exc:
        raise _load_error(what, ref, exc) from exc


def load_tokenizers(student: str, teacher: str | None) -> tuple[Any, int]:
    """The student tokenizer and its real vocabulary size; a teacher's tokenizer must match it (else
    `TokenizerMismatch`, before any weights are loaded)."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, "student tokenizer", student)
    if teacher is not None:
        teacher_tok = _from_pretrained(AutoTokenizer, "teacher tokenizer", teacher)
        check_tokenizer_compatibility(tokenizer, teacher_tok)
    return tokenizer, real_vocab_size(tokenizer)


def check_embedding_rows(model: torch.nn.Module, vocab_size: int, name: str) -> None:
    rows = model.get_input_embeddings().weight.shape[0]  # type: ignore[operator]
    if rows < vocab_size:
        raise BadJobInput(f"{name} has {rows} embedding rows but its tokenizer has {vocab_size} tokens")


def check_architecture(ref: str | Path, what: str) -> None:
    """`BadJobInput` when the model's config names a `model_type` whose logit transform is unknown (read
    from its config alone, so a refused model's weights are never loaded)."""
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig, what, ref)
    try:
        logit_transform(getattr(config, "model_type", None))
    except UnsupportedArchitecture as exc:
        raise BadJobInput(f"{what} {str(ref)!r}: {exc}") from exc


def load_model(name: str, device: torch.device, vocab_size: int) -> torch.nn.Module:
    """A causal LM in fp32 (never remote code; offline when HF_HUB_OFFLINE is set)."""
    from transformers import AutoModelForCausalLM

    check_architecture(name, "model")
    model = _from_pretrained(AutoModelForCausalLM, "model", name, dtype=torch.float32)
    check_embedding_rows(model, vocab_size, name)
    return model.to(device)  # type: ignore[arg-type]  # transformers' decorated .to() confuses mypy


def load_student(config: DistillConfig, device: torch.device, vocab_size: int) -> torch.nn.Module:
    """fp32 master weights (bf16 autocast on CUDA), optional gradient checkpointing and LoRA adapters."""
    model: Any
    lora = config.training.lora
    if lora is not None:
        try:
            import peft
        except ImportError as exc:
            raise RuntimeError(
                "training.lora needs the 'peft' package: pip install 'distillery[lora]' (or pip install peft)"
            ) from exc
    model = load_model(config.student_model, device, vocab_size)
    if config.training.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if lora is not None:
        model = peft.get_peft_model(
            model,
            peft.LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model.to(device)


def resolve_device(choice: str) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("resources.device='cuda' but no CUDA device is available")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda")


def load_teacher(path: str | Path, device: Any = "cpu", dtype: Any = None) -> Any:
    """Load a causal LM as a frozen teacher: eval() mode, every parameter requires_grad=False."""
    from transformers import AutoModelForCausalLM

    check_architecture(path, "teacher model")
    model = _from_pretrained(AutoModelForCausalLM, "teacher model", path, dtype=dtype if dtype is not None else "auto")
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model
