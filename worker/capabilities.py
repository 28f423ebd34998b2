"""What this worker can run, as it advertises it when it registers and passes it with every claim.

- GPUs: the CUDA devices torch sees (name, memory), or ``DISTILLERY_WORKER_GPUS`` (a count) to override the
  detection: fewer keeps GPU jobs off a shared machine, ``0`` makes a CPU-only worker, more than torch sees
  is the operator's claim (a job that then finds too few devices fails its attempt and is retried).
- Launchers: ``inprocess`` always; ``torchrun`` when ``DISTILLERY_WORKER_TORCHRUN`` names a command on PATH,
  or (unset) when torch is installed (``python -m torch.distributed.run``); ``slurm`` when ``sbatch`` is on
  PATH. ``DISTILLERY_WORKER_LAUNCHERS`` (comma-separated) overrides the detection.

The claim picks only jobs these fit (``app.jobs.placement``); ``GET /v1/jobs/{id}`` says why a job no live
worker fits is waiting.
"""

from __future__ import annotations

import glob
import importlib.util
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import Settings

LAUNCHERS = ("inprocess", "torchrun", "slurm")


@dataclass(frozen=True)
class Advertised:
    """One GPU per ``devices`` entry; ``launchers`` always holds ``inprocess``."""

    devices: list[dict[str, Any]] = field(default_factory=list)
    launchers: tuple[str, ...] = ("inprocess",)

    @property
    def gpus(self) -> int:
        return len(self.devices)


def detect_devices() -> list[dict[str, Any]]:
    """CUDA devices seen by torch; [] on a CPU-only machine (torch is not even imported there)."""
    if "torch" not in sys.modules and not glob.glob("/dev/nvidia[0-9]*"):
        return []
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    return devices


def detect_launchers(torchrun: str | None) -> tuple[str, ...]:
    found = ["inprocess"]
    if torchrun:
        command = shlex.split(torchrun)
        if command and shutil.which(command[0]) is not None:
            found.append("torchrun")
    elif importlib.util.find_spec("torch") is not None:
        found.append("torchrun")
    if shutil.which("sbatch") is not None:
        found.append("slurm")
    return tuple(found)


def parse_launchers(value: str) -> tuple[str, ...]:
    """``"torchrun,slurm"`` → ``("inprocess", "torchrun", "slurm")``; an unknown name is a ``ValueError``."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = sorted(set(names) - set(LAUNCHERS))
    if unknown:
        raise ValueError(f"unknown launcher(s) {unknown} in DISTILLERY_WORKER_LAUNCHERS (known: {list(LAUNCHERS)})")
    return tuple(n for n in LAUNCHERS if n == "inprocess" or n in names)


def advertised(settings: Settings) -> Advertised:
    """What this worker advertises: detected, or overridden by ``worker_gpus`` / ``worker_launchers``."""
    devices = detect_devices()
    if settings.worker_gpus is not None:
        wanted = settings.worker_gpus
        devices = devices[:wanted] + [{"index": i, "name": "configured (DISTILLERY_WORKER_GPUS)", "memory_gb": None}
                                      for i in range(len(devices), wanted)]
    if settings.worker_launchers is not None:
        launchers = parse_launchers(settings.worker_launchers)
    else:
        launchers = detect_launchers(settings.worker_torchrun)
    return Advertised(devices, launchers)
