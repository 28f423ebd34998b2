"""The model architectures a student or teacher may have, and what each one's forward does to the logits.

A causal LM's ``forward`` is ``logits = transform(lm_head(final_hidden_states))``. The trainer never runs that
forward for unsupervised positions: it gathers hidden states and applies the head itself, in chunks
(DESIGN §5), so it must apply the same ``transform`` or its losses describe a different model (a Granite
student trained without its ``logits_scaling`` sees logits 8-16× too large). ``ARCHITECTURES`` maps each
supported ``model_type`` (``config.json``) to its transform, as transformers' forward computes it:

- ``none``: the head's output as is (Llama, Mistral, Qwen, Phi, Gemma 1, SmolLM3, OLMo 2, …);
- ``divide``: ``logits / config.logits_scaling`` (Granite, Granite MoE);
- ``multiply``: ``logits * config.logit_scale`` (Cohere, Cohere 2);
- ``softcap``: ``tanh(logits / c) * c`` with ``c = config.final_logit_softcapping`` when it is set
  (Gemma 2, Gemma 3 text-only checkpoints).

Each entry is tested against the model's own forward on a tiny configuration
(``tests/worker/test_logits.py``); a ``model_type`` not in the table is refused — at submit time when the
model is a local folder (``unsupported_architecture``), else when the worker loads it. Torch-free: the API
reads ``config.json`` with the standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

TransformKind = Literal["none", "divide", "multiply", "softcap"]


class UnsupportedArchitecture(ValueError):
    """The model's ``model_type`` has no known logit transform, so its losses cannot be computed faithfully."""


@dataclass(frozen=True)
class LogitTransform:
    """What a forward does after the LM head: ``kind`` applied with the config value named ``key``."""

    kind: TransformKind
    key: str | None = None

    def constant(self, config: Mapping[str, Any]) -> float | None:
        """The transform's constant in ``config`` (a ``config.json`` dict, or its ``text_config``); None
        when the transform is ``none`` or the value is unset (a soft-cap of None means no soft-capping)."""
        if self.key is None:
            return None
        for scope in (config, config.get("text_config") or {}):
            value = scope.get(self.key)
            if value is not None:
                return float(value)
        return None


IDENTITY = LogitTransform("none")
_DIVIDE = LogitTransform("divide", "logits_scaling")
_MULTIPLY = LogitTransform("multiply", "logit_scale")
_SOFTCAP = LogitTransform("softcap", "final_logit_softcapping")

ARCHITECTURES: dict[str, LogitTransform] = {
    "llama": IDENTITY,
    "mistral": IDENTITY,
    "ministral": IDENTITY,
    "mixtral": IDENTITY,
    "qwen2": IDENTITY,
    "qwen2_moe": IDENTITY,
    "qwen3": IDENTITY,
    "qwen3_moe": IDENTITY,
    "phi": IDENTITY,
    "phi3": IDENTITY,
    "gemma": IDENTITY,
    "gemma3": IDENTITY,  # Gemma3ForConditionalGeneration: no soft-capping in its forward
    "smollm3": IDENTITY,
    "olmo2": IDENTITY,
    "starcoder2": IDENTITY,
    "gemma2": _SOFTCAP,
    "gemma3_text": _SOFTCAP,
    "granite": _DIVIDE,
    "granitemoe": _DIVIDE,
    "granitemoeshared": _DIVIDE,
    "cohere": _MULTIPLY,
    "cohere2": _MULTIPLY,
}


def logit_transform(model_type: str | None) -> LogitTransform:
    """The transform of ``model_type``; ``UnsupportedArchitecture`` when it is not in ``ARCHITECTURES``."""
    transform = ARCHITECTURES.get(model_type or "")
    if transform is None:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not supported: Distillery computes the losses from the LM head "
            f"itself and does not know what this architecture's forward does to the logits after it "
            f"(scaling, soft-capping). Supported model types: {supported}"
        )
    return transform


def read_model_config(ref: str | Path) -> dict[str, Any] | None:
    """``config.json`` of a local model folder as a dict, or None when there is no readable one."""
    path = Path(ref) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unsupported_architecture(ref: str | Path) -> str | None:
    """Why a local model folder cannot be trained or scored (its ``model_type`` is unknown), or None when it
    can, or when there is no ``config.json`` to read (a hub id: the worker checks once it has the config)."""
    config = read_model_config(ref)
    if config is None:
        return None
    try:
        logit_transform(config.get("model_type"))
    except UnsupportedArchitecture as exc:
        return str(exc)
    return None


__all__ = [
    "ARCHITECTURES",
    "IDENTITY",
    "LogitTransform",
    "UnsupportedArchitecture",
    "logit_transform",
    "read_model_config",
    "unsupported_architecture",
]
