"""Multi-process work under ``torchrun``: the process group and the few collectives odmaug needs.

``torchrun --nproc_per_node K -m odmaug <command> ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
``train-generator`` then trains with DistributedDataParallel, ``augment`` shards the missing images
and ``benchmark`` does both and spreads its classifier jobs. NCCL serves CUDA ranks, gloo the CPU.
Only rank 0 writes shared files. Without those variables everything here is a no-op.

A command resolves its device and joins the group once, at its start (:func:`init_distributed`),
and hands the resulting :class:`Context` down; library code does not resolve devices again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from odmaug.device import resolve_device
from odmaug.errors import OdmaugError


@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size``, computing on ``device``.

    ``device`` is this rank's device (``cuda:LOCAL_RANK`` for multi-process CUDA); ``backend`` is
    None when single-process.
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False
    """True when this context created the process group (and :func:`shutdown` should end it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        raise OdmaugError(f"{name}={os.environ[name]!r} must be an integer (it is set by torchrun)") from None


def init_distributed(device: str | torch.device = "auto") -> Context:
    """Resolve ``device`` and join the process group described by torchrun's environment (or reuse
    the one joined earlier): the context a command passes down.

    Args:
        device: ``auto``, ``cpu``, ``cuda``... or a torch.device; CUDA ranks use NCCL and ``cuda:LOCAL_RANK``.

    Raises:
        OdmaugError: an unavailable device, or a torchrun environment that does not add up.
    """
    device = resolve_device(device)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Context(device=device)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise OdmaugError(f"RANK={rank} is outside 0..{world - 1}")
    if not dist.is_available():
        raise OdmaugError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
    return Context(dist.get_rank(), dist.get_world_size(), device, local_rank, dist.get_backend(), owns)


def broadcast_object(obj: Any, info: Context) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run folder rank 0 created, or its error message)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_tensors(tensor: torch.Tensor, info: Context) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped CPU tensor (e.g. RNG states), in rank order."""
    if not info.enabled:
        return [tensor]
    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    local = tensor.to(device)
    out = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def barrier(info: Context) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.enabled:
        dist.barrier()


def shutdown(info: Context) -> None:
    """Leave the process group if ``info`` created it (a command nested in another keeps it)."""
    if info.enabled and info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
