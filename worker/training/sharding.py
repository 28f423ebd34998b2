"""FSDP2 for students that do not fit one GPU (`resources.parallelism: "fsdp"`, DESIGN §5-§6).

`shard_student` applies `torch.distributed.fsdp.fully_shard` to every transformer block (the classes the
model lists in `_no_split_modules`) and then to the student itself, so each rank keeps 1/world of the
parameters, gradients and AdamW state. The student's own unit (embeddings, final norm, LM head) is the root
and is not resharded after forward: the span losses apply the LM head to gathered hidden states *outside*
the forward (`losses.final_hidden_states` + `logits.logits_fn`), in checkpointed chunks recomputed during
backward, so its weight must stay gathered until the backward is done. The root's gradients are
reduce-scattered at the end of the backward like every other unit's.

The span weights (`SpanWeighting`, a handful of scalars) are not sharded: every rank keeps a full copy and
`reduce_replicated_grads` averages their gradients, which is what DDP does for them.

Checkpoints are **gathered**: `gather_model_state` and `gather_optimizer_state` return the full (unsharded,
CPU) model and optimizer state on rank 0 — collectives, so every rank calls them — and rank 0 writes them
in the same files an unsharded run writes (`model.safetensors` with the student's parameter names,
`optimizer.pt`). `load_full_state` scatters them back. A checkpoint therefore resumes under the same
parallelism and world size (the optimizer file is keyed by parameter name here, by index under DDP;
`checkpoint.check_resumable` refuses a change), and the final model is an ordinary `save_pretrained` directory.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from worker.training.distributed import all_sum

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def blocks(student: nn.Module) -> list[nn.Module]:
    """The transformer blocks of an HF causal LM: modules whose class is in its `_no_split_modules`."""
    names = set(getattr(student, "_no_split_modules", None) or ())
    return [m for m in student.modules() if type(m).__name__ in names and m is not student]


def shard_student(student: nn.Module, device: torch.device, world: int) -> None:
    """Shard `student` in place over a 1-D mesh of `world` ranks (one FSDP unit per block, the rest in the root)."""
    mesh = init_device_mesh(device.type, (world,))
    for block in blocks(student):
        fully_shard(block, mesh=mesh)
    fully_shard(student, mesh=mesh, reshard_after_forward=False)


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def set_gradient_sync(student: nn.Module, sync: bool) -> None:
    """Gradient accumulation: skip the reduce-scatter on every micro-batch of a window but the last."""
    if isinstance(student, FSDPModule):
        student.set_requires_gradient_sync(sync)


def reduce_replicated_grads(module: nn.Module, world: int) -> None:
    """Average the gradients of an unsharded module's parameters over the ranks (DDP's reduction)."""
    for p in module.parameters():
        if p.grad is not None:
            all_sum(p.grad)
            p.grad.div_(world)


def grad_norm_value(norm: torch.Tensor) -> float:
    """`clip_grad_norm_`'s result as a float (a DTensor over sharded gradients)."""
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


def gather_model_state(student: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of the student on the CPU: a collective every rank calls; the state
    lands on rank 0 (other ranks get an empty dict, so no rank but the writer holds a second full copy)."""
    state = get_model_state_dict(student, options=_FULL)
    return {n: t.contiguous() for n, t in state.items() if isinstance(t, torch.Tensor)}


def trainable_subset(student: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a gathered state the optimizer updates (what a checkpoint's model.safetensors holds)."""
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    return {n: t for n, t in state.items() if n in trainable}


def gather_optimizer_state(owner: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name under `owner` (the module holding every parameter the
    optimizer updates: the student and the span weights), unsharded: a collective; the state lands on rank 0."""
    return get_optimizer_state_dict(owner, optimizer, options=_FULL)


def load_full_state(student: nn.Module, owner: nn.Module, optimizer: torch.optim.Optimizer,
                    tensors: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
    """Scatter a gathered checkpoint back into the sharded student and the optimizer (every rank); `owner` as
    for `gather_optimizer_state`."""
    full = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(student, cast(dict[str, Any], tensors), options=full)
    set_optimizer_state_dict(owner, optimizer, optimizer_state, options=full)


def unsharded_copy(student: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """A plain copy of the student's architecture holding the gathered weights (to `save_pretrained`)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(student.config)  # type: ignore[arg-type]
    model.load_state_dict(tensors)
    return model
