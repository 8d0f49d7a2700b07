"""Reading generator checkpoints (safetensors + JSON, no pickle); they are written atomically by
:func:`odmaug.diffusion.checkpointer.save_checkpoint`.

Layout inside ``<run>/generator/``::

    checkpoint.json            pointer to the latest complete checkpoint, written LAST (atomically)
    step-00000500/
      model.safetensors        training weights (the grade count and image size come from the run's recipe)
      ema.safetensors          EMA weights (decay train.ema_decay, the primary)
      ema-<decay>.safetensors  one more EMA per train.ema_decays entry (runs that set it)
      state.safetensors        optimizer tensors and RNG states of every rank
      state.json               step, optimizer hyper-parameters, precision, world size

A crash while writing leaves the previous pointer and its folder intact, so ``--resume`` always
finds a complete checkpoint. The pointer stores the sha256 of every file; a file that does not
match is reported as corrupt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from odmaug.config import Recipe
from odmaug.data.pixels import COLOUR, PixelFormat
from odmaug.device import resolve_device
from odmaug.diffusion.schedule import TERMINAL_SIGNAL_LIMIT, NoiseSchedule
from odmaug.diffusion.unet import build_generator
from odmaug.digest import file_digest
from odmaug.errors import OdmaugError
from odmaug.runs import open_run
from odmaug.train_state import load_checked

POINTER = "checkpoint.json"
FORMAT_VERSION = 1


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
    tensors = load_checked(path, pointer["sha256"].get(name))
    return path, tensors, file_digest(path)  # memoised: the check above already read it


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
class LoadedGenerator:
    """A trained generator ready to sample (see :func:`load_generator`)."""

    model: torch.nn.Module  # eval mode, on device
    schedule: NoiseSchedule  # from the run's recipe: its betas and what the network predicts (eps or v)
    recipe: Recipe  # the run's recipe
    num_classes: int
    image_size: int
    step: int
    checkpoint_id: str  # short content hash (sha256[:16]) of the weights file used
    weights_path: Path
    pixels: PixelFormat = COLOUR  # channels the network takes and bits of the images it learnt from


def ema_stem(decay: float) -> str:
    """The file stem of the extra EMA of ``decay`` in a checkpoint folder: ``ema-0.9995`` (Python's
    shortest round-trip form of the float, so ``float(stem[4:]) == decay``)."""
    return f"ema-{float(decay)!r}"


def stored_ema_decays(pointer: dict[str, Any]) -> list[float]:
    """The decays of the extra EMAs a checkpoint pointer vouches for (``ema-<decay>.safetensors``), sorted."""
    stems = (n.removesuffix(".safetensors") for n in pointer["sha256"] if n.startswith("ema-") and n.endswith(".safetensors"))
    return sorted(float(stem[4:]) for stem in stems)


def weights_file(pointer: dict[str, Any], primary_decay: float, use_ema: bool = True, ema: float | None = None) -> str:
    """Which weights file of a checkpoint to load: ``model``, the primary ``ema`` or ``ema-<decay>``.

    Args:
        pointer: the checkpoint pointer (:func:`read_pointer`).
        primary_decay: the run's ``train.ema_decay`` (asking for it gives ``ema.safetensors``).
        use_ema: False: the raw training weights.
        ema: an EMA decay in [0, 1) (None: the primary EMA).

    Raises:
        OdmaugError: ``ema`` with ``use_ema=False``, or a decay the checkpoint does not hold.
    """
    if ema is not None and not use_ema:
        raise OdmaugError("an EMA decay was asked for together with the raw (non-EMA) weights")
    if ema is None or float(ema) == float(primary_decay):
        return "ema.safetensors" if use_ema else "model.safetensors"
    name = ema_stem(ema) + ".safetensors"
    if name not in pointer["sha256"]:
        kept = [primary_decay, *stored_ema_decays(pointer)]
        raise OdmaugError(f"the checkpoint holds no EMA of decay {ema} (it kept {', '.join(map(repr, kept))}; "
                          "train.ema_decays lists the extra ones a run keeps)")
    return name


def load_generator(run: str | Path, use_ema: bool = True, device: str | torch.device = "cpu",
                   ema: float | None = None) -> LoadedGenerator:
    """Load the latest generator checkpoint of a run folder.

    Args:
        run: the run folder made by ``odmaug train-generator``.
        use_ema: the EMA weights (default; what the samples grids show) or the raw training weights.
        device: where to put the network (``"auto"`` is resolved).
        ema: the decay of the EMA to load: None or ``train.ema_decay`` gives the primary EMA
            (``ema.safetensors``), one of ``train.ema_decays`` its ``ema-<decay>.safetensors``.

    Raises:
        OdmaugError: no checkpoint, a corrupt file, weights that do not fit the run's recipe, or
            an EMA decay the checkpoint does not hold.
    """
    run_obj = open_run(run)
    recipe = run_obj.recipe()
    generator_dir = run_obj.root / "generator"
    pointer = read_pointer(generator_dir)
    name = weights_file(pointer, recipe.train.ema_decay, use_ema, ema)
    path, tensors, digest = _load_checked(generator_dir, pointer, name)
    num_classes, image_size = recipe.data.num_classes, recipe.image_size("generator")
    given = pointer.get("pixels") if isinstance(pointer.get("pixels"), dict) else {}  # absent before data.channels
    pixels = PixelFormat(int(given.get("channels", 3)), int(given.get("bits", 8)))
    model = build_generator(recipe.generator, num_classes, image_size, pixels.channels)
    load_weights_into(model, tensors, path, num_classes)
    device = resolve_device(device)
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
        pixels=pixels,
    )
