"""Generator checkpoints: safe to write (atomic), safe to read (safetensors + JSON, no pickle).

Layout inside ``<run>/generator/``::

    checkpoint.json            pointer to the latest complete checkpoint, written LAST (atomically)
    step-00000500/
      model.safetensors        training weights  (metadata: num_classes, image_size, step)
      ema.safetensors          EMA weights       (same metadata)
      state.safetensors        optimizer tensors and RNG states of every rank
      state.json               step, optimizer hyper-parameters, precision, world size

A crash while writing leaves the previous pointer and its folder intact, so ``--resume`` always
finds a complete checkpoint. The pointer stores the sha256 of every file; a file that does not
match is reported as corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from odmaug.config import Recipe
from odmaug.diffusion.schedule import TERMINAL_SIGNAL_LIMIT, NoiseSchedule
from odmaug.diffusion.unet import build_generator
from odmaug.errors import OdmaugError
from odmaug.runs import WriteError, atomic_path, atomic_write_json, open_run

POINTER = "checkpoint.json"
FORMAT_VERSION = 1


def _pause_for_tests(point: str, step: int) -> None:
    """Test hook, inert unless ``$ODMAUG_TEST_PAUSE_AT`` is ``<point>@<step>``: then say so on stderr and
    block until killed, so tests/test_kill_resume.py's SIGKILL lands exactly here, not by timing."""
    if os.environ.get("ODMAUG_TEST_PAUSE_AT") == f"{point}@{step}":
        print(f"odmaug-test-paused {point}@{step}", file=sys.stderr, flush=True)
        time.sleep(1e6)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Save ``tensors`` (CPU, contiguous copies) as safetensors atomically; return the file's sha256."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=metadata)
    return file_sha256(path)


def _optimizer_to_flat(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and plain JSON values."""
    tensors, plain = {}, {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                plain[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain_state": plain}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in info.get("plain_state", {}).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(
    generator_dir: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    rng_states: dict[str, torch.Tensor],
    info: dict[str, Any],
    num_classes: int,
    image_size: int,
    keep: int = 1,
) -> Path:
    """Write a complete checkpoint folder, then move the pointer to it, then prune old folders.

    Args:
        generator_dir: ``<run>/generator``.
        step: optimizer steps done.
        model_state, ema_state: state dicts of the training and EMA networks.
        optimizer_state: ``optimizer.state_dict()``.
        rng_states: named uint8 RNG state tensors (e.g. ``rng.data.0``).
        info: extra JSON-able training state (precision, world size, scaler state...).
        keep: how many checkpoint folders to keep (the newest ones).

    Returns:
        The checkpoint folder.
    """
    folder = generator_dir / f"step-{step:08d}"
    fresh = not folder.exists()
    _make_folder(folder)
    meta = {"num_classes": str(num_classes), "image_size": str(image_size), "step": str(step), "format": str(FORMAT_VERSION)}
    optim_tensors, optim_info = _optimizer_to_flat(optimizer_state)
    try:
        hashes = {"model.safetensors": _save_tensors(model_state, folder / "model.safetensors", meta)}
        _pause_for_tests("checkpoint-write", step)  # the folder half written, the pointer on the previous one
        hashes["ema.safetensors"] = _save_tensors(ema_state, folder / "ema.safetensors", meta)
        hashes["state.safetensors"] = _save_tensors({**optim_tensors, **rng_states}, folder / "state.safetensors")
        atomic_write_json(folder / "state.json", {"step": step, "optimizer": optim_info, **info})
        hashes["state.json"] = file_sha256(folder / "state.json")
        atomic_write_json(generator_dir / POINTER, {
            "format": FORMAT_VERSION, "step": step, "folder": folder.name, "num_classes": num_classes,
            "image_size": image_size, "sha256": hashes,
        })
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


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(folder, err.strerror or str(err), err.errno) from None


def _pointer_folder(generator_dir: Path) -> str | None:
    try:
        return json.loads((generator_dir / POINTER).read_text()).get("folder")
    except (OSError, ValueError, AttributeError):
        return None


def read_pointer(generator_dir: Path) -> dict[str, Any]:
    """The latest checkpoint's pointer; a clear error when there is none or it is unreadable."""
    path = generator_dir / POINTER
    if not path.is_file():
        raise OdmaugError(f"no generator checkpoint in {generator_dir.parent} (train one with 'odmaug train-generator')")
    try:
        pointer = json.loads(path.read_text())
        pointer["folder"], pointer["step"], pointer["sha256"]  # noqa: B018 - required keys
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise OdmaugError(f"{path}: corrupt checkpoint pointer (not the JSON odmaug writes)") from None
    return pointer


def _load_checked(
    generator_dir: Path, pointer: dict[str, Any], name: str
) -> tuple[Path, dict[str, torch.Tensor], str]:
    """Load one safetensors file of the checkpoint after verifying its sha256; returns (path, tensors, sha256)."""
    path = generator_dir / pointer["folder"] / name
    if not path.is_file():
        raise OdmaugError(f"checkpoint file missing: {path}")
    digest = file_sha256(path)
    expected = pointer["sha256"].get(name)
    if expected is not None and digest != expected:
        raise OdmaugError(f"{path}: corrupt checkpoint file (sha256 does not match {POINTER})")
    try:
        return path, load_file(str(path)), digest
    except (SafetensorError, OSError, ValueError) as err:
        raise OdmaugError(f"{path}: corrupt checkpoint file ({str(err).splitlines()[0]})") from None


def load_weights_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path, num_classes: int) -> None:
    """Copy ``tensors`` into ``model``; wrong grade count, missing keys or shapes -> one-line error."""
    expected = model.state_dict()
    emb = tensors.get("class_emb.weight")
    if emb is not None and emb.shape[0] != num_classes + 1:
        raise OdmaugError(
            f"{source}: checkpoint was trained for {emb.shape[0] - 1} grades, but the recipe has {num_classes}"
        )
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise OdmaugError(f"{source}: checkpoint does not fit the recipe's generator ({what}; {len(missing) + len(unexpected)} keys differ)")
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise OdmaugError(
                f"{source}: checkpoint does not fit the recipe's generator ({key} has shape "
                f"{list(tensors[key].shape)}, the recipe builds {list(value.shape)})"
            )
    model.load_state_dict(tensors, strict=True)


@dataclass
class TrainingState:
    """Everything :func:`save_checkpoint` wrote, for ``--resume``."""

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    info: dict[str, Any]
    folder: Path


def load_training_state(generator_dir: Path) -> TrainingState:
    """The latest checkpoint with optimizer and RNG state (verified against the pointer's hashes)."""
    pointer = read_pointer(generator_dir)
    model = _load_checked(generator_dir, pointer, "model.safetensors")[1]
    ema = _load_checked(generator_dir, pointer, "ema.safetensors")[1]
    state = _load_checked(generator_dir, pointer, "state.safetensors")[1]
    json_path = generator_dir / pointer["folder"] / "state.json"
    expected = pointer["sha256"].get("state.json")
    if not json_path.is_file() or (expected is not None and file_sha256(json_path) != expected):
        raise OdmaugError(f"{json_path}: missing or corrupt training state")
    info = json.loads(json_path.read_text())
    optimizer = _optimizer_from_flat(state, info.pop("optimizer"))
    rng = {k: v for k, v in state.items() if k.startswith("rng.")}
    return TrainingState(int(pointer["step"]), model, ema, optimizer, rng, info, generator_dir / pointer["folder"])


@dataclass
class LoadedGenerator:
    """A trained generator ready to sample (see :func:`load_generator`)."""

    model: torch.nn.Module  # eval mode, on device
    schedule: NoiseSchedule
    recipe: Recipe  # the run's recipe
    num_classes: int
    image_size: int
    step: int
    checkpoint_id: str  # short content hash (sha256[:16]) of the weights file used
    weights_path: Path


def load_generator(run: str | Path, use_ema: bool = True, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load the latest generator checkpoint of a run folder.

    Args:
        run: the run folder made by ``odmaug train-generator``.
        use_ema: the EMA weights (default; what the samples grids show) or the raw training weights.
        device: where to put the network (``"auto"`` is resolved).

    Raises:
        OdmaugError: no checkpoint, a corrupt file, or weights that do not fit the run's recipe.
    """
    from odmaug.device import resolve_device

    run_obj = open_run(run)
    recipe = run_obj.recipe()
    generator_dir = run_obj.root / "generator"
    pointer = read_pointer(generator_dir)
    name = "ema.safetensors" if use_ema else "model.safetensors"
    path, tensors, digest = _load_checked(generator_dir, pointer, name)
    num_classes, image_size = recipe.data.num_classes, recipe.data.image_size
    model = build_generator(recipe.generator, num_classes, image_size)
    load_weights_into(model, tensors, path, num_classes)
    device = resolve_device(device) if isinstance(device, str) else device
    model = model.to(device=device, memory_format=torch.channels_last).eval()
    model.requires_grad_(False)
    schedule = NoiseSchedule.from_config(recipe.diffusion)
    if schedule.terminal_signal >= TERMINAL_SIGNAL_LIMIT:  # only runs trained before scale_betas existed
        from odmaug.console import warn

        warn(f"{run_obj.root.name} was trained with a schedule whose last step keeps {schedule.terminal_signal:.2f} "
             "of the image; its samples start from pure noise and come out biased: retrain it for faithful images")
    return LoadedGenerator(
        model=model,
        schedule=schedule,
        recipe=recipe,
        num_classes=num_classes,
        image_size=image_size,
        step=int(pointer["step"]),
        checkpoint_id=digest[:16],
        weights_path=path,
    )
