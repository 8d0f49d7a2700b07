"""The classifier's training step and its schedule: batch order, learning rate, precision.

:class:`Stepper` turns a uint8 batch into the classifier's input (batched augmentation,
normalisation, channels-last) and runs :class:`odmaug.train_step.TrainStep`, the one step every
odmaug trainer uses, with label-smoothed cross-entropy and AdamW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from odmaug.classify.models import ClassifierMeta
from odmaug.classify.predict import bf16_hazards
from odmaug.classify.transforms import AugmentSettings, augment_batch
from odmaug.data.images import to_unit_range
from odmaug.console import warn
from odmaug.precision import resolve_precision
from odmaug.train_step import TrainStep


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


def epoch_order(labels: torch.Tensor, balanced: bool, rng: torch.Generator) -> torch.Tensor:
    """Indices of one epoch [N]: a permutation, or class-balanced draws with replacement."""
    n = labels.shape[0]
    if not balanced:
        return torch.randperm(n, generator=rng)
    from torch.utils.data import WeightedRandomSampler

    counts = torch.bincount(labels).double()
    weights = (1.0 / counts)[labels]  # every grade equally likely
    return torch.tensor(list(WeightedRandomSampler(weights, n, replacement=True, generator=rng)))


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


def normalize(x: torch.Tensor, meta: ClassifierMeta) -> torch.Tensor:
    """float [B, C, H, W] in [0, 1] -> normalised with the classifier's mean and std (C values each)."""
    mean = torch.tensor(meta.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(meta.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


@dataclass
class Stepper:
    """One optimisation step on a uint8 batch: augment, normalise, then :class:`TrainStep` with
    label-smoothed cross-entropy (no clipping, no EMA). Shared by training and the speed benchmarks."""

    unit: TrainStep
    meta: ClassifierMeta
    augment: Optional[AugmentSettings]
    label_smoothing: float
    criterion: Optional[Any] = None  # a losses.Criterion (focal, grade weights); None: cross-entropy
    mixer: Optional[Any] = None  # a mixing.Mixer (mixup / cutmix), or None

    @classmethod
    def build(cls, model: nn.Module, meta: ClassifierMeta, cfg, device: torch.device) -> "Stepper":
        """Model moved to ``device`` in channels-last layout (fast oneDNN/cuDNN convolutions),
        AdamW over decay/no-decay groups, precision and augmentation from ``cfg`` (ClassifierConfig)."""
        model = model.to(device, memory_format=torch.channels_last)
        amp_dtype = training_precision(model, meta.model, cfg.precision, meta.image_size, device)
        optimizer = torch.optim.AdamW(parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
        augment = AugmentSettings(True, cfg.vflip, cfg.rotation_degrees, cfg.color_jitter) if cfg.augment else None
        return cls(TrainStep(model, optimizer, device, amp_dtype), meta, augment, cfg.label_smoothing)

    @property
    def model(self) -> nn.Module:
        return self.unit.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.unit.optimizer

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        return self.unit.amp_dtype

    def step(self, images: torch.Tensor, labels: torch.Tensor, rng: torch.Generator,
             smoothing: Optional[torch.Tensor] = None) -> torch.Tensor:
        """images uint8 or uint16 [B, C, S, S] and labels [B] on the device -> the batch loss (scalar tensor).
        ``smoothing``: float [B] label smoothing per image (None: ``label_smoothing`` for all)."""
        x = augment_batch(images, self.augment, rng) if self.augment else to_unit_range(images)
        x = normalize(x, self.meta).contiguous(memory_format=torch.channels_last)
        if self.mixer is not None:
            from odmaug.classify.mixing import soft_cross_entropy

            x, target = self.mixer(x, labels, rng)
            return self.unit(lambda: soft_cross_entropy(self.model(x).float(), target))
        if self.criterion is not None:
            return self.unit(lambda: self.criterion(self.model(x).float(), labels, smoothing))
        if smoothing is not None:
            return self.unit(lambda: smoothed_cross_entropy(self.model(x).float(), labels, smoothing))
        return self.unit(lambda: F.cross_entropy(self.model(x).float(), labels, label_smoothing=self.label_smoothing))


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with label smoothing per sample: logits [B, C], labels int64 [B],
    smoothing float [B] in [0, 1). Sample i's target puts ``1 - e_i`` on its grade and ``e_i / C``
    on every grade, so with one ``e`` for all this is ``F.cross_entropy(label_smoothing=e)``."""
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, labels[:, None]).squeeze(1)  # [B]
    uniform = -log_p.mean(dim=1)  # [B]: cross-entropy against the uniform target
    smoothing = smoothing.to(log_p.dtype)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()
