"""Multi-process training under ``torchrun``: process group set-up and the few collectives we need.

``odmaug train-generator`` run as ``torchrun --nproc_per_node K -m odmaug train-generator ...``
finds ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in the environment and trains with
DistributedDataParallel: NCCL on CUDA, gloo on the CPU. Only rank 0 writes files. Without those
variables everything here is a no-op on a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from odmaug.errors import OdmaugError


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``; ``backend`` is None when single-process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by torchrun's environment variables (once per process).

    Args:
        device: the device type this process trains on; CUDA ranks use NCCL and ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available():
        raise OdmaugError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for multi-process CUDA, else ``device``."""
    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run folder rank 0 created)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_tensors(tensor: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped CPU tensor (e.g. RNG states), in rank order."""
    if not info.enabled:
        return [tensor]
    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    local = tensor.to(device)
    out = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group (call once at the end of a distributed command)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
