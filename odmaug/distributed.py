"""Multi-process work under ``torchrun``: the process group and the few collectives odmaug needs.

``torchrun --nproc_per_node K -m odmaug -- <command> ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
``train-generator`` then trains with DistributedDataParallel, ``augment`` shards the missing images
and ``benchmark`` does both and spreads its classifier jobs. NCCL serves CUDA ranks, gloo the CPU.
Only rank 0 writes shared files. Without those variables everything here is a no-op.

This module is the one place torchrun's variables are read (:func:`launch_env`, also before any
process group exists); it imports torch only when a function needs it, so the console can ask for
the rank without loading torch. Several nodes (``torchrun --nnodes N --rdzv_backend c10d
--rdzv_endpoint host:port``) need nothing more: ranks are global, the run folders sit on a shared
file system, and rank 0 (on whichever node) writes them.

A command resolves its device and joins the group once, at its start (:func:`init_distributed`),
and hands the resulting :class:`Context` down; library code does not resolve devices again.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from odmaug.errors import OdmaugError

if TYPE_CHECKING:
    import torch


def _cpu() -> "torch.device":
    import torch

    return torch.device("cpu")


@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size``, computing on ``device``.

    ``device`` is this rank's device (``cuda:LOCAL_RANK`` for multi-process CUDA); ``backend`` is
    None when single-process.
    """

    rank: int = 0
    world_size: int = 1
    device: "torch.device" = field(default_factory=_cpu)
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


class LaunchEnv(NamedTuple):
    """What torchrun told this process: its global ``rank`` of ``world_size``, its ``local_rank`` on its node."""

    rank: int
    world_size: int
    local_rank: int


def launch_env() -> LaunchEnv:
    """torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (0, 1, 0 without torchrun).

    Raises:
        OdmaugError: a variable that is not an integer.
    """
    return LaunchEnv(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def process_rank() -> int:
    """This process's global rank: the process group's when one is up, else torchrun's ``RANK``."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    try:
        return launch_env().rank
    except OdmaugError:
        return 0


def init_distributed(device: str | torch.device = "auto") -> Context:
    """Resolve ``device`` and join the process group described by torchrun's environment (or reuse
    the one joined earlier): the context a command passes down.

    Args:
        device: ``auto``, ``cpu``, ``cuda``... or a torch.device; CUDA ranks use NCCL and ``cuda:LOCAL_RANK``.

    Raises:
        OdmaugError: an unavailable device, or a torchrun environment that does not add up.
    """
    import torch
    import torch.distributed as dist

    from odmaug.device import resolve_device

    device = resolve_device(device)
    rank, world, local_rank = launch_env()
    if world <= 1:
        return Context(device=device)
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
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_tensors(tensor: torch.Tensor, info: Context) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped CPU tensor (e.g. RNG states), in rank order."""
    if not info.enabled:
        return [tensor]
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    local = tensor.to(device)
    out = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def barrier(info: Context) -> None:
    """Wait for every rank (no-op on one process)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(info: Context) -> None:
    """Leave the process group if ``info`` created it (a command nested in another keeps it).

    Called from ``finally``: when no exception is on its way out, the ranks first meet at a
    barrier, so none tears the group down while another's last collective (a checkpoint's gather)
    may still be in flight; a rank that failed leaves at once (torchrun stops the others)."""
    import torch.distributed as dist

    if info.enabled and info.owns_group and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()
