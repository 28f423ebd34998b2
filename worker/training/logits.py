"""Logits exactly as a causal LM's forward produces them, from its final hidden states.

The losses and the evaluation gather the hidden states of supervised positions and apply the LM head
themselves, in chunks, so the full [B, T, V] logits never exist. `logits_fn(model)` is that head: the output
embedding followed by the architecture's post-head transform (`contract.architectures`: Granite's
`logits_scaling`, Gemma 2/3's `final_logit_softcapping`, Cohere's `logit_scale`), in fp32. A model whose
`model_type` has no known transform is refused (`check_supported`), never trained on silently wrong logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from contract.architectures import LogitTransform, UnsupportedArchitecture, logit_transform
from worker.context import BadJobInput


def unwrap(model: nn.Module) -> nn.Module:
    """The HF causal LM inside DDP/FSDP (`.module`) and PEFT (`get_base_model`) wrappers."""
    inner: Any = model
    while isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


def _config_value(config: Any, key: str) -> float | None:
    for scope in (config, getattr(config, "text_config", None)):
        value = getattr(scope, key, None) if scope is not None else None
        if value is not None:
            return float(value)
    return None


def model_transform(model: nn.Module) -> tuple[LogitTransform, float | None]:
    """The model's post-head transform and its constant; `UnsupportedArchitecture` for an unknown type."""
    config = getattr(unwrap(model), "config", None)
    transform = logit_transform(getattr(config, "model_type", None))
    constant = _config_value(config, transform.key) if transform.key else None
    return transform, constant


def check_supported(model: nn.Module, name: str) -> None:
    """`BadJobInput` (permanent) when the model's architecture has no known logit transform."""
    try:
        model_transform(model)
    except UnsupportedArchitecture as exc:
        raise BadJobInput(f"{name}: {exc}") from exc


def apply_transform(logits: Tensor, transform: LogitTransform, constant: float | None) -> Tensor:
    """`logits` [n, V] after the forward's post-head step (identity when the constant is unset)."""
    if constant is None or transform.kind == "none":
        return logits
    if transform.kind == "divide":
        return logits / constant
    if transform.kind == "multiply":
        return logits * constant
    return torch.tanh(logits / constant) * constant  # softcap


def logits_fn(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """hidden [n, H] → fp32 logits [n, V] exactly as `model.forward` computes them (the matmul runs in the
    model's dtype / autocast; the transform and everything after it in fp32)."""
    inner = unwrap(model)
    head: nn.Module = inner.get_output_embeddings()  # type: ignore[operator]
    transform, constant = model_transform(inner)

    def fn(hidden: Tensor) -> Tensor:
        return apply_transform(head(hidden).float(), transform, constant)

    return fn


def head_rows(model: nn.Module) -> int:
    """Rows of the output embedding (the logit width, padded rows included)."""
    weight = unwrap(model).get_output_embeddings().weight  # type: ignore[operator]
    assert isinstance(weight, Tensor)
    return int(weight.shape[0])
