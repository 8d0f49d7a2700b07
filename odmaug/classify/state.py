"""Resumable classifier training: after every epoch, the model, the best model so far, the optimizer
and the data-order generator are written as one :mod:`odmaug.train_state` file
(``train_state.safetensors``, replaced atomically), with the epoch bookkeeping in its JSON. A key
(:func:`odmaug.digest.stage_key` of the settings, the data and the seed) ties a state or a finished
run to its inputs, so a changed setting never resumes from, or reuses, a run it does not belong to.

States written before ``KEY_VERSION`` 2 carry a key of the former scheme: they never match, so
training starts afresh and the file is replaced at the first finished epoch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from odmaug.config import Recipe
from odmaug.classify.levers import keyed_settings
from odmaug.data import ImageTable
from odmaug.digest import stage_key
from odmaug.train_state import TrainingState, load_state_file, save_state_file

STATE_FILE = "train_state.safetensors"
KEY_VERSION = 2


@dataclass
class TrainState:
    """Epoch bookkeeping of a training run (JSON-serialisable)."""

    key: str
    epoch: int = 0
    best: Optional[dict[str, Any]] = None
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def fingerprint(recipe: Recipe, train: ImageTable, val: ImageTable, test: Optional[ImageTable], seed: int) -> str:
    """The stage key of everything that changes the trained model or its reported metrics (the
    synthetic-row levers only where they act on ``train``)."""
    settings = {
        "version": KEY_VERSION,
        "classifier": keyed_settings(recipe.classifier, train, exclude=frozenset({"num_workers"})),
        "num_classes": recipe.data.num_classes,
        "image_size": recipe.image_size("data"),  # the images as loaded; the classifier's own size is in its settings
        "crop_box": recipe.data.crop_box,
    }
    return stage_key(settings, [train, val, test], seed)


def is_finished(out_dir: Path, key: str) -> bool:
    """Whether ``out_dir`` holds a finished run with this key (reads only: for plans and dry runs)."""
    try:
        record = json.loads((out_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("key") == key and (out_dir / "model.safetensors").is_file()


def load_finished(out_dir: Path, key: str) -> Optional[dict[str, Any]]:
    """The recorded results of a finished run with this key, else None.

    A ``metrics.json`` of another key is removed, so a crash in the retraining that follows can
    never leave new weights beside old metrics.
    """
    metrics_path = out_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    try:
        record = json.loads(metrics_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        record = {}
    if record.get("key") == key and (out_dir / "model.safetensors").is_file():
        return {k: record[k] for k in ("val", "test", "best_epoch", "history", "seed", "timing")}
    metrics_path.unlink()
    return None


def save_state(
    out_dir: Path,
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: torch.Generator,
    best: dict[str, torch.Tensor],
    step: int,
) -> None:
    """Write the resumable state of the epoch just finished (``step``: optimizer steps so far)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_state_file(out_dir / STATE_FILE, TrainingState(
        step, model.state_dict(), optimizer.state_dict(), rng={"data": rng.get_state()},
        extra={"best": best}, info=asdict(state),
    ))


def load_state(
    out_dir: Path,
    key: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: torch.Generator,
) -> Optional[tuple[TrainState, dict[str, torch.Tensor]]]:
    """Restore an interrupted run with this key into ``model``, ``optimizer`` and ``rng``.

    Returns:
        (state, best model state dict), or None when there is nothing (matching) to resume.
    """
    saved = load_state_file(out_dir / STATE_FILE, expect={"key": key})
    if saved is None or "best" not in saved.extra or "data" not in saved.rng:
        return None
    model.load_state_dict(saved.model)
    optimizer.load_state_dict(saved.optimizer)
    rng.set_state(saved.rng["data"])
    state = TrainState(**{f.name: saved.info[f.name] for f in fields(TrainState) if f.name in saved.info})
    return state, saved.extra["best"]


def remove_state(out_dir: Path) -> None:
    """Drop the resumable state once the run is finished."""
    (out_dir / STATE_FILE).unlink(missing_ok=True)
