"""What a finished classifier run is: its result, and the files it leaves in its folder.

``model.safetensors`` and ``classifier.json`` (the selected epoch's weights), ``config.yaml``,
``predictions.csv`` (validation and test) and ``metrics.json``, written last: its presence, with
the run's key, marks a finished run (read back by :func:`odmaug.classify.state.load_finished`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from odmaug.atomic import atomic_write_json, atomic_write_text
from odmaug.classify.corn import grade_outputs
from odmaug.classify.levers import SyntheticLevers
from odmaug.classify.models import ClassifierMeta, save_classifier
from odmaug.classify.predict import load_images, predict_logits, predictions_frame
from odmaug.classify.state import TrainState, remove_state
from odmaug.classify.step import Stepper
from odmaug.config import Recipe, dump_recipe
from odmaug.data import ImageTable, write_manifest
from odmaug.metrics.classification import classification_metrics

PREDICTIONS_FILE = "predictions.csv"
"""Per-image validation and test predictions of a classifier (path, split, label, predicted)."""


@dataclass
class ClassifierResult:
    """What :func:`odmaug.classify.train.train_classifier` produced.

    Attributes:
        out_dir: the classifier folder (model.safetensors, classifier.json, config.yaml,
            metrics.json, predictions.csv).
        val: validation metrics of the selected (best-QWK) epoch.
        test: test metrics of that model, or None without a test split.
        best_epoch: 1-based epoch that was selected.
        history: per-epoch records (loss, val QWK/accuracy, lr, seconds, img/s).
        seed: the seed the run used.
        timing: train seconds, seconds per epoch, training images per second.
        resumed_from: epochs that were loaded from an interrupted run (0: fresh), or -1 when a
            finished run was reused as is.
        model_path, metrics_path, predictions_path: files in ``out_dir``.
    """

    out_dir: Path
    val: dict[str, Any]
    test: Optional[dict[str, Any]]
    best_epoch: int
    history: list[dict[str, Any]]
    seed: int
    timing: dict[str, float]
    resumed_from: int = 0
    model_path: Path = field(init=False)
    metrics_path: Path = field(init=False)
    predictions_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.model_path, self.metrics_path, self.predictions_path = (
            self.out_dir / name for name in ("model.safetensors", "metrics.json", PREDICTIONS_FILE))


def finish(recipe: Recipe, stepper: Stepper, state: TrainState, train: ImageTable, val: ImageTable,
           test: Optional[ImageTable], *, val_images: torch.Tensor, out_dir: Path, seed: int,
           resumed_from: int, levers: SyntheticLevers) -> ClassifierResult:
    """Write the selected model (already in ``stepper.model``), its config, predictions and
    metrics (metrics.json last: the marker of a finished run; ``levers``: those that acted on
    ``train``, recorded there); drop the resumable state."""
    import pandas as pd

    cfg, meta, model = recipe.classifier, stepper.meta, stepper.model
    device, amp_dtype = stepper.unit.device, stepper.amp_dtype
    logits = predict_logits(model, meta, val_images, device, cfg.eval_batch_size, amp_dtype)
    frames, test_metrics = [predictions_frame(val, *grade_outputs(logits, meta.head))], None
    if test is not None:
        test_images = load_images(test, meta.image_size, recipe.data.crop_box, cfg.num_workers)
        logits = predict_logits(model, meta, test_images, device, cfg.eval_batch_size, amp_dtype)
        frames.append(predictions_frame(test, *grade_outputs(logits, meta.head)))
        test_metrics = classification_metrics(test.labels, frames[-1]["predicted"].to_numpy(), meta.num_classes)
    meta.extra["precision"] = str(amp_dtype).removeprefix("torch.") if amp_dtype else "float32"
    save_classifier(model, meta, out_dir)
    atomic_write_text(out_dir / "config.yaml", dump_recipe(recipe))
    write_manifest(pd.concat(frames, ignore_index=True), out_dir / PREDICTIONS_FILE)
    train_seconds = sum(r["seconds"] for r in state.history)
    images_seen = sum(r["images_per_second"] * r["seconds"] for r in state.history)
    timing = {
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(1, len(state.history)),
        "images_per_second": images_seen / max(train_seconds, 1e-9),
    }
    result = ClassifierResult(out_dir, state.best, test_metrics, state.best_epoch, state.history, seed, timing, resumed_from)
    _write_metrics(result, state, meta, train, device, levers)
    remove_state(out_dir)
    return result


def _write_metrics(result: ClassifierResult, state: TrainState, meta: ClassifierMeta, train: ImageTable,
                   device: torch.device, levers: SyntheticLevers) -> None:
    """``metrics.json``: the run's key, results, timing and history (written last); ``train``
    records the synthetic-row levers that acted on the table (``synthetic_levers``, {} for none)."""
    atomic_write_json(result.metrics_path, {
        "key": state.key,
        "model": meta.model,
        "image_size": meta.image_size,
        "device": str(device),
        "precision": meta.extra["precision"],
        "train": {"name": train.name, "n": len(train), "counts": train.counts().tolist(),
                  "sources": train.frame["source"].value_counts().to_dict(), "synthetic_levers": levers.record()},
        "val": result.val,
        "test": result.test,
        "best_epoch": result.best_epoch,
        "seed": result.seed,
        "timing": result.timing,
        "history": state.history,
    })
