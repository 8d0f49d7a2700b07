"""Training state that outlives the process: checkpoints, resume, and Ctrl-C.

``N steps, an interruption, --resume`` must end with the same weights and EMA, bit for bit, as one
uninterrupted run. That holds when a checkpoint stores the weights, EMA, optimizer and step of one
step boundary together with the RNG states of that same boundary. Three things could break it:

* Ctrl-C lands anywhere, e.g. after the next step's batch was drawn from the data stream, or
  between ``optimizer.step()`` and the EMA update. So the RNG states are snapshot at every step
  boundary (:meth:`CheckpointState._snapshot_rng`) and checkpoints store the snapshot, not the live
  streams; and a step's updates run with SIGINT held back (:class:`InterruptGuard`), so an
  interrupt sees step k or step k + 1 whole, never half of one.
* A run killed before its first checkpoint has nothing to load: it resumes from step 0, whose
  state the recipe's seed fixes (the same as a fresh run's).
* A full disk mid-checkpoint: the pointer stays on the previous checkpoint (see
  :func:`odmaug.diffusion.checkpoint.save_checkpoint`); the check before training
  (:meth:`CheckpointState._check_room`) catches the plain cases before any work is done.

Also here: what a training call reports when it ends (:class:`TrainResult`, the weight digests).
"""

from __future__ import annotations

import hashlib
import resource
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from odmaug import distributed as ddp_utils
from odmaug.diffusion.checkpoint import POINTER, load_training_state, load_weights_into, save_checkpoint
from odmaug.errors import OdmaugError
from odmaug.precision import precision_name
from odmaug.runs import check_writable


class InterruptGuard:
    """While installed (``with guard:``), SIGINT raises KeyboardInterrupt at once, as Python's own
    handler does, except inside ``with guard.hold():``, where it is raised when the block ends.

    Installs nothing outside the main thread or when someone else already handles SIGINT.
    """

    def __init__(self) -> None:
        self.holding = self.pending = False
        self._previous = None

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.holding, self.pending = True, False
        try:
            yield
        finally:
            self.holding = False
        if self.pending:  # only after a block that finished: its state is whole
            self.pending = False
            raise KeyboardInterrupt


class CheckpointState:
    """Checkpoint and resume for :class:`odmaug.diffusion.trainer._Trainer` (mixed into it).

    Uses the trainer's ``model``, ``ema``, ``optimizer``, ``scaler``, ``generator``, ``step``,
    ``dist``, ``device``, ``dtype``, ``gen_dir``, ``cfg``, ``num_classes``, ``size`` and ``_log``.
    """

    rng: dict[str, torch.Tensor]  # RNG states at the last step boundary
    saved_step: int = -1  # step of the newest checkpoint this call wrote or resumed from

    def _snapshot_rng(self) -> None:
        """Record the RNG states of a step boundary (call with the state of that step whole)."""
        self.rng = {"data": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            self.rng["cuda"] = torch.cuda.get_rng_state(self.device)

    def _restore(self) -> None:
        gen_dir: Path = self.gen_dir
        if not (gen_dir / POINTER).is_file():
            # Killed before its first checkpoint: the seeds set up in __init__ are step 0.
            self._log("resume_from_start", reason="no checkpoint yet")
            return
        state = load_training_state(gen_dir)
        load_weights_into(self.model, state.model, state.folder / "model.safetensors", self.num_classes)
        load_weights_into(self.ema, state.ema, state.folder / "ema.safetensors", self.num_classes)
        try:
            self.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError, RuntimeError) as err:
            raise OdmaugError(f"{state.folder}: optimizer state does not fit this model ({err})") from None
        rank = self.dist.rank
        saved_world = int(state.info.get("world_size", 1))
        if saved_world == self.dist.world_size and f"rng.data.{rank}" in state.rng:
            self.generator.set_state(state.rng[f"rng.data.{rank}"])
            torch.set_rng_state(state.rng[f"rng.torch.{rank}"])
            if self.device.type == "cuda" and f"rng.cuda.{rank}" in state.rng:
                torch.cuda.set_rng_state(state.rng[f"rng.cuda.{rank}"], self.device)
        elif self.dist.is_main:
            self._log("resume_reseeded", reason=f"checkpoint written by {saved_world} processes, now {self.dist.world_size}")
        if self.scaler is not None and "scaler" in state.info:
            self.scaler.load_state_dict(state.info["scaler"])
        self.step = self.saved_step = state.step

    def _checkpoint(self) -> None:
        """Write the current step with the RNG snapshot of its boundary (every rank calls this)."""
        gathered = {}
        for name, state in self.rng.items():
            for rank, value in enumerate(ddp_utils.gather_tensors(state, self.dist)):
                gathered[f"rng.{name}.{rank}"] = value
        if self.dist.is_main:
            info = {"precision": precision_name(self.dtype), "world_size": self.dist.world_size}
            if self.scaler is not None:
                info["scaler"] = self.scaler.state_dict()
            folder = save_checkpoint(
                self.gen_dir, self.step, self.model.state_dict(), self.ema.state_dict(), self.optimizer.state_dict(),
                gathered, info, self.num_classes, self.size, keep=self.cfg.keep_checkpoints,
            )
            self._log("checkpoint", step=self.step, folder=folder.name)
        self.saved_step = self.step
        ddp_utils.barrier(self.dist)

    def _checkpoint_on_interrupt(self, start_step: int) -> None:
        """Keep the steps done since the last checkpoint (one process only: DDP ranks cannot meet now)."""
        if not self.dist.enabled and self.saved_step < self.step and self.step > start_step:
            self._checkpoint()

    def _finish(self, start_step: int, seconds: float) -> TrainResult:
        """The call's result, logged as ``train_end`` with every rank's weight digest (equal under DDP)."""
        done = self.step - start_step
        digests = ddp_utils.gather_tensors(
            torch.frombuffer(bytearray(weights_digest(self.model).encode()), dtype=torch.uint8), self.dist
        )
        result = TrainResult(
            run=self.run.root, step=self.step, steps_this_call=done, seconds=seconds,
            images_per_second=done * self.cfg.batch_size / seconds if done else 0.0,
            peak_memory_mb=peak_memory_mb(self.device), precision=precision_name(self.dtype),
            world_size=self.dist.world_size,
        )
        self._log(
            "train_end", step=self.step, steps_this_call=done, seconds=round(seconds, 2),
            img_s=round(result.images_per_second, 2), peak_memory_mb=round(result.peak_memory_mb, 1),
            rank_weight_digests=[bytes(d.tolist()).decode() for d in digests],
        )
        return result

    def _check_room(self) -> None:
        """Before the first step: the generator folder takes files and has room for a checkpoint."""
        if self.dist.is_main:
            # fp32 weights, EMA and Adam's two moments; the previous checkpoint goes only after
            need = 16 * sum(p.numel() for p in self.model.parameters())
            check_writable(self.gen_dir, folder=True, need_bytes=need)


# ----------------------------------------------------------------- what a training call reports
@dataclass
class TrainResult:
    """What a training call did."""

    run: Path
    step: int  # optimizer steps done in total
    steps_this_call: int
    seconds: float  # wall time of the training loop (without data loading)
    images_per_second: float  # real training images per second (global batch), this call
    peak_memory_mb: float  # peak resident memory of this process (CPU) or peak CUDA allocation
    precision: str
    world_size: int


def weights_digest(model: nn.Module) -> str:
    """sha256[:16] of a model's parameters in order: identical weights give identical digests."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA allocation on CUDA; else this process's peak resident set size (Linux: KiB units)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
