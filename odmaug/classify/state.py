"""Resumable classifier training: one safetensors file per classifier folder holding the model,
the best model so far, the optimizer moments and the data-order generator, with the epoch
bookkeeping in its metadata, written atomically after every epoch. A key (hash of the recipe
settings, the data and the seed) ties a state or a finished run to its inputs, so a changed
setting never resumes from, or reuses, a run it does not belong to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from odmaug.config import Recipe
from odmaug.data import ImageTable
from odmaug.runs import atomic_path

STATE_FILE = "train_state.safetensors"
KEY_VERSION = 1


@dataclass
class TrainState:
    """Epoch bookkeeping of a training run (JSON-serialisable)."""

    key: str
    epoch: int = 0
    best: Optional[dict[str, Any]] = None
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def fingerprint(recipe: Recipe, train: ImageTable, val: ImageTable, test: Optional[ImageTable], seed: int) -> str:
    """A hash of everything that changes the trained model or its reported metrics."""
    settings = recipe.classifier.model_dump(mode="json", exclude={"num_workers"})
    parts = {
        "version": KEY_VERSION,
        "classifier": settings,
        "num_classes": recipe.data.num_classes,
        "image_size": recipe.data.image_size,
        "crop_box": recipe.data.crop_box,
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for table in (train, val, test):
        frame = table.frame[["path", "label"]] if table is not None else None
        digest.update(b"|" if frame is None else frame.to_csv(index=False).encode())
    return digest.hexdigest()[:16]


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
    generator: torch.Generator,
    best: dict[str, torch.Tensor],
) -> None:
    """Write the resumable state of the epoch just finished (one atomic file)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {"generator": generator.get_state()}
    for name, value in model.state_dict().items():
        tensors[f"model.{name}"] = value.detach().cpu().contiguous()
    for name, value in best.items():
        tensors[f"best.{name}"] = value.contiguous()
    for index, moments in optimizer.state_dict()["state"].items():
        for name, value in moments.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / STATE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(asdict(state))})


def load_state(
    out_dir: Path,
    key: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> Optional[tuple[TrainState, dict[str, torch.Tensor]]]:
    """Restore an interrupted run with this key into ``model``, ``optimizer`` and ``generator``.

    Returns:
        (state, best model state dict), or None when there is nothing (matching) to resume.
    """
    from safetensors import SafetensorError, safe_open

    path = out_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = json.loads((fh.metadata() or {}).get("state", "{}"))
            if raw.get("key") != key:
                return None
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError):
        return None  # a torn or foreign file: start afresh
    state = TrainState(**raw)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key_name = name.split(".", 2)
            moments.setdefault(int(index), {})[key_name] = value
    saved = optimizer.state_dict()
    saved["state"] = moments
    optimizer.load_state_dict(saved)
    generator.set_state(tensors["generator"])
    return state, best


def remove_state(out_dir: Path) -> None:
    """Drop the resumable state once the run is finished."""
    (out_dir / STATE_FILE).unlink(missing_ok=True)
