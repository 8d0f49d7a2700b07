"""Generator training state that outlives the process: checkpoints, resume, and Ctrl-C.

``N steps, an interruption, --resume`` must end with the same weights and EMA, bit for bit, as one
uninterrupted run. That holds when a checkpoint stores the weights, EMA, optimizer and step of one
step boundary together with the RNG states of that same boundary. Three things could break it:

* Ctrl-C lands anywhere, e.g. after the next step's batch was drawn from the data stream, or
  between ``optimizer.step()`` and the EMA update. So the RNG states are snapshot at every step
  boundary (:meth:`Checkpointer.snapshot_rng`) and checkpoints store the snapshot, not the live
  streams; and a step's updates run with SIGINT held back (:class:`InterruptGuard`), so an
  interrupt sees step k or step k + 1 whole, never half of one.
* A run killed before its first checkpoint has nothing to load: it resumes from step 0, whose
  state the recipe's seed fixes (the same as a fresh run's).
* A full disk mid-checkpoint: the pointer stays on the previous checkpoint (see
  :func:`save_checkpoint`); the check before training (:meth:`Checkpointer.check_room`) catches
  the plain cases before any work is done.

A checkpoint is a folder of :mod:`odmaug.train_state` (the training-state format the classifier
uses too), ``<run>/generator/step-<step>/``, and ``checkpoint.json`` points at the newest complete
one with the sha256 of each of its files (see :mod:`odmaug.diffusion.checkpoint`, which reads it).
The trainer hands a :class:`Checkpointer` exactly the parts it saves and restores (no mixin) and
calls it with the step: ``restore`` on resume, ``check_room`` before the first step, ``snapshot_rng``
at each step boundary, ``save`` (``save_on_interrupt`` on Ctrl-C), and ``finish`` for the result.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from odmaug import distributed as ddp_utils
from odmaug.atomic import atomic_write_json, check_writable
from odmaug.config import TrainConfig
from odmaug.data.pixels import PixelFormat
from odmaug.diffusion.checkpoint import FORMAT_VERSION, POINTER, load_weights_into, read_pointer
from odmaug.digest import tensors_digest
from odmaug.errors import OdmaugError
from odmaug.precision import precision_name
from odmaug.train_state import TrainingState, load_state_folder, save_state_folder
from odmaug.train_step import TrainStep


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


def _pause_for_tests(point: str, step: int) -> None:
    """Test hook, inert unless ``$ODMAUG_TEST_PAUSE_AT`` is ``<point>@<step>``: then say so on stderr and
    block until killed, so a test's SIGKILL lands exactly here, not by timing."""
    if os.environ.get("ODMAUG_TEST_PAUSE_AT") == f"{point}@{step}":
        print(f"odmaug-test-paused {point}@{step}", file=sys.stderr, flush=True)
        time.sleep(1e6)


def save_checkpoint(generator_dir: Path, state: TrainingState, keep: int = 1) -> Path:
    """Write ``state`` as a complete checkpoint folder, then move the pointer to it, then prune.

    Args:
        generator_dir: ``<run>/generator``.
        state: the step, weights, EMA, optimizer, RNG states (``data.<rank>``, ``torch.<rank>``...)
            and ``info`` (precision, world size, the fp16 scaler's state).
        keep: how many checkpoint folders to keep (the newest ones).

    Returns:
        The checkpoint folder.

    Raises:
        WriteError: a file cannot be written; the pointer then stays on the previous checkpoint.
    """
    step = state.step
    folder = generator_dir / f"step-{step:08d}"
    fresh = not folder.exists()

    def pause_after_weights(name: str) -> None:  # the folder half written, the pointer on the previous one
        if name == "model.safetensors":
            _pause_for_tests("checkpoint-write", step)

    try:
        hashes = save_state_folder(folder, state, pause_after_weights)
        pointer = {"format": FORMAT_VERSION, "step": step, "folder": folder.name, "sha256": hashes}
        if "pixels" in state.info:  # channels and bits the network was trained on (absent: 3, 8)
            pointer["pixels"] = state.info["pixels"]
        atomic_write_json(generator_dir / POINTER, pointer)
    except BaseException:
        # A failed write (a full disk, Ctrl-C) leaves the pointer on the previous checkpoint. A
        # half-written folder it does not point to only takes space, and the pruning below could
        # keep it in place of a complete one. (Checked: an interrupt may land after the pointer moved.)
        if fresh and _pointer_folder(generator_dir) != folder.name:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    old = sorted(p for p in generator_dir.glob("step-*") if p.is_dir() and p.name != folder.name)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def _pointer_folder(generator_dir: Path) -> str | None:
    try:
        return json.loads((generator_dir / POINTER).read_text()).get("folder")
    except (OSError, ValueError, AttributeError):
        return None


def load_checkpoint(generator_dir: Path) -> tuple[TrainingState, Path]:
    """The newest checkpoint's training state (each file verified against the pointer) and its folder.

    Raises:
        OdmaugError: no checkpoint, or a missing or corrupt file.
    """
    pointer = read_pointer(generator_dir)
    folder = generator_dir / pointer["folder"]
    return load_state_folder(folder, pointer["sha256"]), folder


@dataclass(eq=False)
class Checkpointer:
    """Checkpoint and resume of one training call, over exactly the parts a checkpoint holds.

    The trainer makes one and keeps the step; :meth:`restore` returns it, the other methods take it.
    """

    model: nn.Module  # the network being trained (not the DDP or compiled wrapper)
    ema: nn.Module  # the train.ema_decay EMA
    extra_emas: dict[str, nn.Module]  # the train.ema_decays EMAs, by checkpoint name (ema_stem)
    unit: TrainStep  # its optimizer and fp16 scaler
    rng: torch.Generator  # this rank's data stream
    context: ddp_utils.Context  # rank, world size, device
    dtype: torch.dtype | None  # the training precision
    gen_dir: Path  # <run>/generator (TrainResult.run is its parent)
    cfg: TrainConfig
    num_classes: int
    pixels: PixelFormat  # the channels and bits the network is trained on
    log: Callable[..., None]  # log(event, **fields) into the run's log (rank 0)
    rng_states: dict[str, torch.Tensor] = field(default_factory=dict)  # at the last step boundary
    saved_step: int = -1  # step of the newest checkpoint this call wrote or resumed from

    def snapshot_rng(self) -> None:
        """Record the RNG states of a step boundary (call with the state of that step whole)."""
        self.rng_states = {"data": self.rng.get_state(), "torch": torch.get_rng_state()}
        if self.context.device.type == "cuda":
            self.rng_states["cuda"] = torch.cuda.get_rng_state(self.context.device)

    def restore(self) -> int:
        """Load the newest checkpoint into the parts; returns its step (0 when there is none yet)."""
        if not (self.gen_dir / POINTER).is_file():
            # Killed before its first checkpoint: the seeds the trainer set up are step 0.
            self.log("resume_from_start", reason="no checkpoint yet")
            return 0
        state, folder = load_checkpoint(self.gen_dir)
        load_weights_into(self.model, state.model, folder / "model.safetensors", self.num_classes)
        load_weights_into(self.ema, state.ema or {}, folder / "ema.safetensors", self.num_classes)
        self._restore_extra_emas(state, folder)
        try:
            self.unit.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError, RuntimeError) as err:
            raise OdmaugError(f"{folder}: optimizer state does not fit this model ({err})") from None
        self._restore_rng(state)
        if self.unit.scaler is not None and "scaler" in state.info:
            self.unit.scaler.load_state_dict(state.info["scaler"])
        self.saved_step = state.step
        return state.step

    def _restore_extra_emas(self, state: TrainingState, folder: Path) -> None:
        """The ``train.ema_decays`` EMAs; one the checkpoint lacks cannot be made up (it would not be
        an average of this run's past), so asking for it is an error; ones no longer asked for are dropped."""
        for name, module in self.extra_emas.items():
            if name not in state.emas:
                raise OdmaugError(f"{folder}: the checkpoint holds no {name} EMA (it has "
                                  f"{sorted(state.emas) or 'none'}); train.ema_decays cannot gain a decay on resume")
            load_weights_into(module, state.emas[name], folder / f"{name}.safetensors", self.num_classes)
        if dropped := sorted(set(state.emas) - set(self.extra_emas)):
            self.log("ema_dropped", names=dropped, reason="not in train.ema_decays")

    def _restore_rng(self, state: TrainingState) -> None:
        """This rank's RNG states, when the checkpoint was written by as many processes as run now."""
        rank, world, device = self.context.rank, self.context.world_size, self.context.device
        saved_world = int(state.info.get("world_size", 1))
        if saved_world == world and f"data.{rank}" in state.rng:
            self.rng.set_state(state.rng[f"data.{rank}"])
            torch.set_rng_state(state.rng[f"torch.{rank}"])
            if device.type == "cuda" and f"cuda.{rank}" in state.rng:
                torch.cuda.set_rng_state(state.rng[f"cuda.{rank}"], device)
        elif self.context.is_main:
            self.log("resume_reseeded", reason=f"checkpoint written by {saved_world} processes, now {world}")

    def save(self, step: int) -> None:
        """Write step ``step`` with the RNG snapshot of its boundary (every rank calls this)."""
        gathered = {f"{name}.{rank}": value for name, state in self.rng_states.items()
                    for rank, value in enumerate(ddp_utils.gather_tensors(state, self.context))}
        if self.context.is_main:
            info = {"precision": precision_name(self.dtype), "world_size": self.context.world_size,
                    "pixels": {"channels": self.pixels.channels, "bits": self.pixels.bits}}
            if self.unit.scaler is not None:
                info["scaler"] = self.unit.scaler.state_dict()
            state = TrainingState(step, self.model.state_dict(), self.unit.optimizer.state_dict(),
                                  self.ema.state_dict(), gathered, info=info,
                                  emas={name: m.state_dict() for name, m in self.extra_emas.items()})
            folder = save_checkpoint(self.gen_dir, state, keep=self.cfg.keep_checkpoints)
            self.log("checkpoint", step=step, folder=folder.name)
        self.saved_step = step
        ddp_utils.barrier(self.context)

    def save_on_interrupt(self, step: int, start_step: int) -> None:
        """Keep the steps done since the last checkpoint (one process only: DDP ranks cannot meet now)."""
        if not self.context.enabled and self.saved_step < step and step > start_step:
            self.save(step)

    def finish(self, step: int, start_step: int, seconds: float) -> TrainResult:
        """The call's result, logged as ``train_end`` with every rank's weight digest (equal under DDP)."""
        done, digest = step - start_step, tensors_digest(self.model.state_dict(), 16).encode()
        digests = ddp_utils.gather_tensors(torch.frombuffer(bytearray(digest), dtype=torch.uint8), self.context)
        result = TrainResult(run=self.gen_dir.parent, step=step, steps_this_call=done, seconds=seconds,
                             images_per_second=done * self.cfg.batch_size / seconds if done else 0.0,
                             peak_memory_mb=peak_memory_mb(self.context.device), precision=precision_name(self.dtype),
                             world_size=self.context.world_size)
        self.log("train_end", step=step, steps_this_call=done, seconds=round(seconds, 2),
                 img_s=round(result.images_per_second, 2), peak_memory_mb=round(result.peak_memory_mb, 1),
                 rank_weight_digests=[bytes(d.tolist()).decode() for d in digests])
        return result

    def check_room(self) -> None:
        """Before the first step: the generator folder takes files and has room for a checkpoint."""
        if self.context.is_main:
            # fp32 weights, EMAs and Adam's two moments; the previous checkpoint goes only after
            need = (16 + 4 * len(self.extra_emas)) * sum(p.numel() for p in self.model.parameters())
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


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA allocation on CUDA; else this process's peak resident set size (Linux: KiB units)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
