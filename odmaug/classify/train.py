"""Train a severity classifier: any timm model, AdamW with warm-up and cosine decay, label
smoothing, batched on-device augmentation, optional class-balanced sampling, bf16 autocast, and
model selection by validation QWK.

The whole training set lives in memory as one uint8 tensor (RetinaMNIST at 32 px is 3 MB), so
the loop does no decoding and no host conversions. Every random draw (initialisation, batch
order, augmentation) comes from ``seed``; training resumes after an interruption from the last
finished epoch, and a finished run with the same inputs is returned without retraining.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from odmaug.classify.augment import AugmentSettings, augment_batch
from odmaug.classify.models import ClassifierMeta, create_model, load_pretrained, save_classifier
from odmaug.classify.predict import bf16_hazards, load_images, predict_logits, predictions_frame
from odmaug.precision import autocast, resolve_precision
from odmaug.classify.splits import check_splits, training_splits  # noqa: F401 (re-export)
from odmaug.classify.state import TrainState, fingerprint, load_finished, load_state, remove_state, save_state
from odmaug.config import Recipe, dump_recipe
from odmaug.console import progress, warn
from odmaug.data import ImageTable, write_manifest
from odmaug.data.images import CLASSIFIER_MEAN, CLASSIFIER_STD
from odmaug.device import resolve_device
from odmaug.errors import OdmaugError
from odmaug.metrics.classification import classification_metrics
from odmaug.runs import atomic_write_json, atomic_write_text

LogFn = Callable[..., None]


PREDICTIONS_FILE = "predictions.csv"
"""Per-image validation and test predictions of a classifier (path, split, label, predicted)."""

@dataclass
class ClassifierResult:
    """What :func:`train_classifier` produced.

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
    """

    out_dir: Path
    val: dict[str, Any]
    test: Optional[dict[str, Any]]
    best_epoch: int
    history: list[dict[str, Any]]
    seed: int
    timing: dict[str, float]
    resumed_from: int = 0

    @property
    def model_path(self) -> Path:
        return self.out_dir / "model.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.json"

    @property
    def predictions_path(self) -> Path:
        return self.out_dir / PREDICTIONS_FILE


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and kernels only, not on biases and norm scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def epoch_order(labels: torch.Tensor, balanced: bool, generator: torch.Generator) -> torch.Tensor:
    """Indices of one epoch [N]: a permutation, or class-balanced draws with replacement."""
    n = labels.shape[0]
    if not balanced:
        return torch.randperm(n, generator=generator)
    from torch.utils.data import WeightedRandomSampler

    counts = torch.bincount(labels).double()
    weights = (1.0 / counts)[labels]  # every grade equally likely
    return torch.tensor(list(WeightedRandomSampler(weights, n, replacement=True, generator=generator)))


def training_precision(model: nn.Module, name: str, precision: str, image_size: int,
                       device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for training (None: fp32); bf16 falls back to fp32 where CPU bf16
    gradients are wrong for this model and size (see :func:`bf16_hazards`)."""
    amp_dtype = resolve_precision(precision, device)
    if amp_dtype == torch.bfloat16 and device.type == "cpu":
        hazards = bf16_hazards(model, image_size)
        if hazards:
            warn(f"{name} at {image_size}px: bf16 weight gradients of {hazards[0]} (1x1 input, "
                 "strided) are wrong on CPUs (oneDNN); training in fp32")
            return None
    return amp_dtype


@dataclass
class Stepper:
    """One optimisation step on a uint8 batch: augment, normalise, forward under autocast,
    label-smoothed cross-entropy, backward, AdamW. Shared by training and the speed benchmark."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    meta: ClassifierMeta
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    augment: Optional[AugmentSettings]
    label_smoothing: float
    scaler: Optional[torch.amp.GradScaler] = None

    @classmethod
    def build(cls, model: nn.Module, meta: ClassifierMeta, cfg, device: torch.device) -> "Stepper":
        """Model moved to ``device`` in channels-last layout (fast oneDNN/cuDNN convolutions),
        AdamW over decay/no-decay groups, precision and augmentation from ``cfg`` (ClassifierConfig)."""
        model = model.to(device, memory_format=torch.channels_last)
        amp_dtype = training_precision(model, meta.model, cfg.precision, meta.image_size, device)
        optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
        scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
        augment = AugmentSettings(True, cfg.vflip, cfg.rotation_degrees, cfg.color_jitter) if cfg.augment else None
        return cls(model, optimizer, meta, device, amp_dtype, augment, cfg.label_smoothing, scaler)

    def step(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """images uint8 [B, 3, S, S] and labels [B] on the device -> the batch loss (scalar tensor)."""
        x = augment_batch(images, self.augment, generator) if self.augment else images.float().div(255.0)
        x = normalize(x, self.meta).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            logits = self.model(x)  # [B, C]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss


def train_classifier(
    recipe: Recipe,
    train: ImageTable,
    val: ImageTable,
    test: Optional[ImageTable],
    out_dir: str | Path,
    seed: int,
    device: str | torch.device = "auto",
    log: Optional[LogFn] = None,
    show_progress: bool = True,
) -> ClassifierResult:
    """Train ``recipe.classifier`` on ``train``, select the epoch with the best val QWK, test it.

    Args:
        recipe: the recipe (``classifier`` section; ``data.num_classes``, ``image_size``, ``crop_box``).
        train: training images (real, or a balanced real + synthetic table).
        val: validation images for model selection.
        test: held-out test images, or None.
        out_dir: the classifier folder to write.
        seed: seeds initialisation, batch order and augmentation.
        device: ``auto``, ``cpu``, ``cuda``... or a torch.device.
        log: optional ``log(event, **fields)`` (e.g. ``Run.log``) for per-epoch records.
        show_progress: draw the rich progress bar.

    Returns:
        A :class:`ClassifierResult`; files as described there.

    Raises:
        OdmaugError: unknown model, bad pretrained file, empty split, grades out of range.
    """
    cfg = recipe.classifier
    out_dir = Path(out_dir)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    check_splits(recipe, train, val, test)
    num_classes = recipe.data.num_classes
    size = cfg.image_size or recipe.data.image_size
    key = fingerprint(recipe, train, val, test, seed)
    finished = load_finished(out_dir, key)
    if finished is not None:
        return ClassifierResult(out_dir=out_dir, resumed_from=-1, **finished)

    torch.manual_seed(seed)  # timm initialises from the global generator
    model = create_model(cfg.model, num_classes, size)
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained)
    meta = ClassifierMeta(
        cfg.model, num_classes, size, CLASSIFIER_MEAN, CLASSIFIER_STD, recipe.data.crop_box,
        extra={"train": train.name, "seed": seed, "train_counts": train.counts().tolist()},
    )
    stepper = Stepper.build(model, meta, cfg, device)
    model, optimizer, amp_dtype = stepper.model, stepper.optimizer, stepper.amp_dtype
    generator = torch.Generator().manual_seed(seed)

    crop = recipe.data.crop_box
    train_images = load_images(train, size, crop, cfg.num_workers).to(device)  # uint8 [N, 3, S, S]
    train_labels = torch.from_numpy(train.labels.copy())
    val_images = load_images(val, size, crop, cfg.num_workers)
    batch_size = min(cfg.batch_size, len(train))
    steps_per_epoch = len(train) // batch_size  # drop the ragged last batch (BatchNorm needs > 1)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    state = TrainState(key=key)
    best_state: Optional[dict[str, torch.Tensor]] = None
    resumed = load_state(out_dir, key, model, optimizer, generator)
    if resumed is not None:
        state, best_state = resumed
    resumed_from = state.epoch

    bar = progress("img", transient=False) if show_progress else None
    task = None
    if bar is not None:
        bar.start()
        task = bar.add_task(f"classifier {cfg.model}", total=total_steps * batch_size,
                            completed=state.epoch * steps_per_epoch * batch_size, info="")
    try:
        for epoch in range(state.epoch, cfg.epochs):
            model.train()
            order = epoch_order(train_labels, cfg.balanced_sampling, generator)
            started, loss_sum = time.perf_counter(), torch.zeros((), device=device)
            for i in range(steps_per_epoch):
                step = epoch * steps_per_epoch + i
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(step, total_steps, warmup_steps)
                idx = order[i * batch_size : (i + 1) * batch_size]
                loss = stepper.step(train_images[idx.to(device)], train_labels[idx].to(device), generator)
                loss_sum += loss.detach()
                if bar is not None:
                    bar.update(task, advance=batch_size)
            seconds = time.perf_counter() - started
            if not torch.isfinite(loss_sum):
                raise OdmaugError(f"classifier training diverged (non-finite loss) in epoch {epoch + 1}; "
                                  "lower classifier.lr or set classifier.precision=fp32")
            val_metrics, val_loss = _score(model, meta, val_images, val.labels, device, cfg.eval_batch_size, amp_dtype)
            record = {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum) / steps_per_epoch,
                "val_loss": val_loss,
                "val_qwk": val_metrics["qwk"],
                "val_accuracy": val_metrics["accuracy"],
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds,
                "images_per_second": steps_per_epoch * batch_size / seconds,
            }
            state.history.append(record)
            if state.best is None or (val_metrics["qwk"], val_metrics["accuracy"]) > (state.best["qwk"], state.best["accuracy"]):
                state.best, state.best_epoch = val_metrics, epoch + 1
                best_state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
            state.epoch = epoch + 1
            save_state(out_dir, state, model, optimizer, generator, best_state)
            if log is not None:
                log("classifier_epoch", **record)
            if bar is not None:
                bar.update(task, info=f"loss {record['train_loss']:.3f} | val QWK {record['val_qwk']:.3f} "
                                      f"acc {record['val_accuracy']:.3f} | best {state.best['qwk']:.3f} @{state.best_epoch}")
    finally:
        if bar is not None:
            bar.stop()

    bad = [k for k, v in best_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise OdmaugError(f"classifier weights became non-finite ({bad[0]}); set classifier.precision=fp32")
    model.load_state_dict(best_state)
    return _finish(recipe, meta, model, state, train, val, test, val_images, out_dir, seed, device, amp_dtype, resumed_from)


def normalize(x: torch.Tensor, meta: ClassifierMeta) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] -> normalised with the classifier's mean and std."""
    mean = torch.tensor(meta.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(meta.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _score(model, meta, images, labels, device, batch_size, amp_dtype) -> tuple[dict[str, Any], float]:
    logits = predict_logits(model, meta, images, device, batch_size, amp_dtype)  # [N, C]
    target = torch.from_numpy(np.array(labels, dtype=np.int64))
    loss = float(F.cross_entropy(logits, target))
    return classification_metrics(target.numpy(), logits.argmax(1).numpy(), meta.num_classes), loss


def _finish(recipe, meta, model, state, train, val, test, val_images, out_dir, seed, device, amp_dtype, resumed_from):
    """Write the selected model, its config, predictions and metrics (metrics.json last: the
    marker of a finished run)."""
    cfg = recipe.classifier
    frames, test_metrics = [], None
    logits = predict_logits(model, meta, val_images, device, cfg.eval_batch_size, amp_dtype)
    frames.append(predictions_frame(val, torch.softmax(logits, 1).numpy()))
    if test is not None:
        test_images = load_images(test, meta.image_size, recipe.data.crop_box, cfg.num_workers)
        logits = predict_logits(model, meta, test_images, device, cfg.eval_batch_size, amp_dtype)
        frames.append(predictions_frame(test, torch.softmax(logits, 1).numpy()))
        test_metrics = classification_metrics(test.labels, frames[-1]["predicted"].to_numpy(), meta.num_classes)
    meta.extra["precision"] = str(amp_dtype).removeprefix("torch.") if amp_dtype else "float32"
    save_classifier(model, meta, out_dir)
    atomic_write_text(out_dir / "config.yaml", dump_recipe(recipe))
    import pandas as pd

    write_manifest(pd.concat(frames, ignore_index=True), out_dir / PREDICTIONS_FILE)
    train_seconds = sum(r["seconds"] for r in state.history)
    images_seen = sum(r["images_per_second"] * r["seconds"] for r in state.history)
    timing = {
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(1, len(state.history)),
        "images_per_second": images_seen / max(train_seconds, 1e-9),
    }
    result = ClassifierResult(out_dir, state.best, test_metrics, state.best_epoch, state.history, seed, timing, resumed_from)
    atomic_write_json(out_dir / "metrics.json", {
        "key": state.key,
        "model": meta.model,
        "image_size": meta.image_size,
        "device": str(device),
        "precision": meta.extra["precision"],
        "train": {"name": train.name, "n": len(train), "counts": train.counts().tolist(),
                  "sources": train.frame["source"].value_counts().to_dict()},
        "val": result.val,
        "test": result.test,
        "best_epoch": result.best_epoch,
        "seed": seed,
        "timing": timing,
        "history": state.history,
    })
    remove_state(out_dir)
    return result

