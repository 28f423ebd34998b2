"""torch.distributed as the trainer uses it: rank and world size, a barrier, a SUM all-reduce, and the
process-group start under torchrun. Outside torchrun every helper is a no-op (rank 0 of a world of 1).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) when no process group is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place SUM over ranks (NCCL only reduces CUDA tensors: CPU bookkeeping tensors take a round trip)."""
    if rank_and_world()[1] > 1:
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            on_gpu = t.to("cuda")
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            t.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def init_distributed(device_choice: str) -> tuple[int, int]:
    """Start the process group torchrun describes in the environment (nccl on CUDA, gloo on CPU);
    returns (rank, world_size). A single process starts nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    use_cuda = device_choice != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
