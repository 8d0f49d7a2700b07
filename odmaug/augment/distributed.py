"""Process groups for sharded synthesis under ``torchrun`` (one process per GPU or CPU worker).

Only small Python objects travel between ranks (the list of pending images, error messages), so
the gloo backend serves CPU and CUDA ranks alike; the images themselves go to the shared folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from odmaug.errors import OdmaugError


@dataclass
class Ranks:
    """This process's place among the synthesis workers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (no-op for one process)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_ok(self, error: str | None) -> None:
        """Raise on every rank when any rank failed (``error`` is this rank's message or None)."""
        if not self.distributed:
            if error:
                raise OdmaugError(error)
            return
        errors: list[Any] = [None] * self.world_size
        dist.all_gather_object(errors, error)
        first = next((e for e in errors if e), None)
        if first:
            raise OdmaugError(first)

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def ranks_from_env() -> Ranks:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun) and join the gloo group."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise OdmaugError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world <= 1:
        return Ranks()
    if not 0 <= rank < world:
        raise OdmaugError(f"RANK={rank} is outside 0..{world - 1}")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=world)
        owns = True
    return Ranks(rank, world, local, owns)


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per rank on a multi-GPU machine (``cuda:<LOCAL_RANK>``); other devices unchanged."""
    if ranks.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ranks.local_rank % max(1, torch.cuda.device_count()))
    return device
