"""Train a severity classifier: any timm model, AdamW with warm-up and cosine decay, label
smoothing, batched on-device augmentation, optional class-balanced sampling, bf16 autocast, and
model selection by validation QWK.

The whole training set lives in memory as one uint8 tensor (RetinaMNIST at 32 px is 3 MB), so
the loop does no decoding and no host conversions. Every random draw (initialisation, batch
order, augmentation) comes from ``seed``; training resumes after an interruption from the last
finished epoch, and a finished run with the same inputs is returned without retraining. The step
itself is :class:`odmaug.classify.step.Stepper`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from odmaug.classify.corn import head_loss, head_outputs, predicted_grades
from odmaug.classify.losses import build_criterion
from odmaug.classify.mixing import Mixer
from odmaug.classify.levers import SyntheticLevers, mixed_epoch_order, row_smoothing, synthetic_rows
from odmaug.classify.models import ClassifierMeta, create_model
from odmaug.classify.outputs import ClassifierResult, finish
from odmaug.classify.predict import load_images, predict_logits
from odmaug.classify.hub import HUB, load_hub
from odmaug.classify.pretrained import load_pretrained
from odmaug.classify.datasets import check_splits
from odmaug import tensorboard
from odmaug.classify.state import TrainState, fingerprint, load_finished, load_state, save_state
from odmaug.classify.step import Stepper, epoch_order, lr_factor
from odmaug.config import Recipe
from odmaug.console import progress
from odmaug.data import ImageTable
from odmaug.data.images import classifier_norm
from odmaug.device import resolve_device
from odmaug.errors import OdmaugError
from odmaug.metrics.classification import classification_metrics

LogFn = Callable[..., None]


@dataclass
class _Training:
    """What the epoch loop of one :func:`train_classifier` call works with."""

    recipe: Recipe
    stepper: Stepper
    rng: torch.Generator  # batch order and augmentation
    train_images: torch.Tensor  # uint8 [N, 3, S, S] on the device
    train_labels: torch.Tensor  # [N] on the CPU
    synthetic: torch.Tensor  # bool [N] on the CPU: the rows with source "synthetic"
    levers: SyntheticLevers  # the synthetic-row levers that act on this table
    smoothing: Optional[torch.Tensor]  # float [N] label smoothing per row on the device, or None
    val: ImageTable
    val_images: torch.Tensor  # uint8 [M, 3, S, S] on the CPU
    batch_size: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.recipe.classifier.epochs * self.steps_per_epoch


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
        train: training images (real, or a balanced real + synthetic table; its ``source`` column
            says which rows ``classifier.synthetic_batch_share`` and ``synthetic_label_smoothing``
            act on, see :mod:`odmaug.classify.levers`).
        val: validation images for model selection.
        test: held-out test images, or None.
        out_dir: the classifier folder to write.
        seed: seeds initialisation, batch order and augmentation.
        device: the command's torch.device (a name such as ``auto`` or ``cpu`` is resolved here).
        log: optional ``log(event, **fields)`` (e.g. ``Run.log``) for per-epoch records.
        show_progress: draw the rich progress bar.

    Returns:
        A :class:`ClassifierResult`; files as described there.

    Raises:
        OdmaugError: unknown model, bad pretrained file, empty split, grades out of range.
    """
    out_dir, device = Path(out_dir), resolve_device(device)
    check_splits(recipe, train, val, test)
    key = fingerprint(recipe, train, val, test, seed)
    finished = load_finished(out_dir, key)
    if finished is not None:
        return ClassifierResult(out_dir=out_dir, resumed_from=-1, **finished)
    run = _prepare(recipe, train, val, seed, device)
    state, best_state = TrainState(key=key), None
    resumed = load_state(out_dir, key, run.stepper.model, run.stepper.optimizer, run.rng)
    if resumed is not None:
        state, best_state = resumed
    resumed_from = state.epoch
    best_state = _run_epochs(run, state, best_state, out_dir, log, show_progress)
    bad = [k for k, v in best_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise OdmaugError(f"classifier weights became non-finite ({bad[0]}); set classifier.precision=fp32")
    run.stepper.model.load_state_dict(best_state)
    return finish(recipe, run.stepper, state, train, val, test, val_images=run.val_images, out_dir=out_dir,
                  seed=seed, resumed_from=resumed_from, levers=run.levers)


def _prepare(recipe: Recipe, train: ImageTable, val: ImageTable, seed: int, device: torch.device) -> _Training:
    """The network from ``seed`` (and the pretrained weights), its step, and the images in memory."""
    cfg, num_classes = recipe.classifier, recipe.data.num_classes
    size = recipe.image_size("classifier")
    torch.manual_seed(seed)  # timm initialises from the global generator
    pixels = train.pixel_format()
    outputs = head_outputs(cfg.head, num_classes)  # C logits, or C - 1 for a CORN head
    model = create_model(cfg.model, outputs, size, pixels.channels)
    extra = {"train": train.name, "seed": seed, "train_counts": train.counts().tolist(), "bits": pixels.bits}
    if cfg.pretrained == HUB:  # classifier.json says which weights it started from and which stayed random
        extra |= load_hub(model, cfg.model, outputs, size, pixels.channels)
    elif cfg.pretrained:
        extra |= {"pretrained": str(cfg.pretrained), "pretrained_random": load_pretrained(model, cfg.pretrained)}
    meta = ClassifierMeta(cfg.model, num_classes, size, *classifier_norm(pixels.channels), recipe.data.crop_box,
                          extra=extra, channels=pixels.channels, head=cfg.head)
    stepper = Stepper.build(model, meta, cfg, device)
    stepper.criterion = build_criterion(cfg, train.counts(), device)
    crop = recipe.data.crop_box
    batch_size = min(cfg.batch_size, len(train))
    if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
        batch_size -= batch_size % 2  # a small table must not make the mixed batch odd
    synthetic, levers = synthetic_rows(train), SyntheticLevers.active(cfg, train)
    stepper.mixer = Mixer.build(cfg, num_classes, batch_size, levers.label_smoothing is not None)
    smoothing = row_smoothing(cfg, levers, synthetic)
    return _Training(
        recipe, stepper, torch.Generator().manual_seed(seed),
        train_images=load_images(train, size, crop, cfg.num_workers).to(device),
        train_labels=torch.from_numpy(train.labels.copy()), synthetic=torch.from_numpy(synthetic), levers=levers,
        smoothing=None if smoothing is None else smoothing.to(device),
        val=val, val_images=load_images(val, size, crop, cfg.num_workers), batch_size=batch_size,
        steps_per_epoch=len(train) // batch_size,  # drop the ragged last batch (BatchNorm needs > 1)
    )


def _run_epochs(run: _Training, state: TrainState, best_state: Optional[dict[str, torch.Tensor]], out_dir: Path,
                log: Optional[LogFn], show_progress: bool) -> dict[str, torch.Tensor]:
    """Train from ``state.epoch`` to the last epoch, saving the resumable state after each; returns
    the weights of the best epoch (by val QWK, then accuracy)."""
    cfg, stepper = run.recipe.classifier, run.stepper
    images_per_epoch = run.steps_per_epoch * run.batch_size
    bar = _Bar(show_progress, f"classifier {cfg.model}", cfg.epochs * images_per_epoch, state.epoch * images_per_epoch)
    with bar:
        for epoch in range(state.epoch, cfg.epochs):
            loss_sum, seconds = _train_epoch(run, epoch, bar)
            if not torch.isfinite(loss_sum):
                raise OdmaugError(f"classifier training diverged (non-finite loss) in epoch {epoch + 1}; "
                                  "lower classifier.lr or set classifier.precision=fp32")
            val_metrics, val_loss = _score(stepper, run.val_images, run.val.labels, cfg.eval_batch_size)
            record = {
                "epoch": epoch + 1, "train_loss": float(loss_sum) / run.steps_per_epoch, "val_loss": val_loss,
                "val_qwk": val_metrics["qwk"], "val_accuracy": val_metrics["accuracy"],
                "lr": stepper.optimizer.param_groups[0]["lr"], "seconds": seconds,
                "images_per_second": images_per_epoch / seconds,
            }
            state.history.append(record)
            if state.best is None or (val_metrics["qwk"], val_metrics["accuracy"]) > (state.best["qwk"], state.best["accuracy"]):
                state.best, state.best_epoch = val_metrics, epoch + 1
                best_state = {k: v.detach().clone().cpu() for k, v in stepper.model.state_dict().items()}
            state.epoch = epoch + 1
            save_state(out_dir, state, stepper.model, stepper.optimizer, run.rng, best_state,
                       step=state.epoch * run.steps_per_epoch)
            if log is not None:
                log("classifier_epoch", **record)
            tensorboard.mirror(out_dir, "classifier_epoch", record)  # a no-op unless --log tensorboard
            bar.show(f"loss {record['train_loss']:.3f} | val QWK {record['val_qwk']:.3f} acc "
                     f"{record['val_accuracy']:.3f} | best {state.best['qwk']:.3f} @{state.best_epoch}")
    return best_state


def _train_epoch(run: _Training, epoch: int, bar: "_Bar") -> tuple[torch.Tensor, float]:
    """One epoch of steps: (summed batch losses, a device scalar; wall seconds)."""
    cfg, stepper, device = run.recipe.classifier, run.stepper, run.stepper.unit.device
    stepper.model.train()
    order = _epoch_order(run)
    warmup_steps = round(cfg.warmup_epochs * run.steps_per_epoch)
    started, loss_sum = time.perf_counter(), torch.zeros((), device=device)
    for i in range(run.steps_per_epoch):
        stepper.unit.set_lr(cfg.lr * lr_factor(epoch * run.steps_per_epoch + i, run.total_steps, warmup_steps))
        idx = order[i * run.batch_size : (i + 1) * run.batch_size]
        on_device = idx.to(device)  # one host-to-device copy of the batch's indices per step
        smoothing = None if run.smoothing is None else run.smoothing[on_device]
        loss = stepper.step(run.train_images[on_device], run.train_labels[idx].to(device), run.rng, smoothing)
        loss_sum += loss.detach()
        bar.advance(run.batch_size)
    return loss_sum, time.perf_counter() - started


def _epoch_order(run: _Training) -> torch.Tensor:
    """Row indices of the next epoch: with an active synthetic batch share, batches of that
    composition; else today's shuffle (or class-balanced draws) of all rows."""
    cfg = run.recipe.classifier
    if run.levers.batch_share is None:
        return epoch_order(run.train_labels, cfg.balanced_sampling, run.rng)
    return mixed_epoch_order(run.train_labels, run.synthetic, run.levers.batch_share, run.batch_size,
                             run.steps_per_epoch, cfg.balanced_sampling, run.rng)


class _Bar:
    """The training progress bar, or nothing when it is not shown."""

    def __init__(self, show: bool, description: str, total: int, completed: int) -> None:
        self.bar = progress("img", transient=False) if show else None
        self.args = (description, total, completed)

    def __enter__(self) -> "_Bar":
        if self.bar is not None:
            self.bar.start()
            description, total, completed = self.args
            self.task = self.bar.add_task(description, total=total, completed=completed, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self, images: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=images)

    def show(self, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, info=info)


def _score(stepper: Stepper, images: torch.Tensor, labels, batch_size: int) -> tuple[dict[str, Any], float]:
    """Validation metrics and mean loss of the current weights (cross-entropy; CORN's loss and
    grades for a CORN head)."""
    meta = stepper.meta
    logits = predict_logits(stepper.model, meta, images, stepper.unit.device, batch_size, stepper.amp_dtype)  # [N, outputs]
    target = torch.from_numpy(np.array(labels, dtype=np.int64))
    loss = float(head_loss(logits, target, meta.head))
    predicted = predicted_grades(logits, meta.head)
    return classification_metrics(target.numpy(), predicted.numpy(), meta.num_classes), loss


