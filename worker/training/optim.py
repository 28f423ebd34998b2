"""The optimisation recipe of a run: seeding, AdamW parameter groups, and the warmup + cosine schedule."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import torch

from contract.job_config import DistillConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to `min_ratio` at `total`."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def build_optimizer(model: torch.nn.Module, weighting: torch.nn.Module, config: DistillConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; span weights in their own no-decay group and lr."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.training.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    span_params = [p for p in weighting.parameters() if p.requires_grad]
    if span_params:
        groups.append({"params": span_params, "weight_decay": 0.0, "lr": config.loss.weighting_lr})
    return torch.optim.AdamW(groups, lr=config.training.lr, betas=(0.9, 0.95), eps=1e-8)


def build_scheduler(optimizer: torch.optim.Optimizer, config: DistillConfig, total_steps: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    tc = config.training
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.warmup_steps, total_steps, tc.min_lr_ratio))
