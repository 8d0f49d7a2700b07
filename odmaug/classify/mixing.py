"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of training batches, by timm's
``timm.data.Mixup`` (``classifier.mixup_alpha``, ``classifier.cutmix_alpha``; with both set, each
batch is one or the other, even odds).

A batch is mixed with its own reverse (``mode='batch'``: one ``lambda`` per batch), so the batch
size must be even; the targets become timm's label-smoothed soft targets (``classifier.
label_smoothing``), and the loss is cross-entropy against them. timm draws from numpy's global
generator; each batch seeds it from the training generator (and restores numpy's state after), so
training stays reproducible and resumable. Mixing draws one number from the training generator per
step, so after the first batch the augmentation draws differ from those of an unmixed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from odmaug.errors import OdmaugError


@dataclass
class Mixer:
    """timm's Mixup of one classifier's training (see the module docstring)."""

    mixup: Any  # timm.data.Mixup

    @classmethod
    def build(cls, cfg: Any, num_classes: int, batch_size: int, row_smoothing: bool = False) -> Optional["Mixer"]:
        """The mixer of ``cfg`` (ClassifierConfig), or None when neither alpha is set.
        ``row_smoothing``: the synthetic label-smoothing lever acts on this table.

        Raises:
            OdmaugError: an odd batch size, or the lever acting too (one line).
        """
        if not (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0):
            return None
        if row_smoothing:
            raise OdmaugError("classifier.mixup_alpha / cutmix_alpha cannot be combined with an acting "
                              "classifier.synthetic_label_smoothing")
        if batch_size % 2:
            raise OdmaugError(f"classifier.mixup_alpha / cutmix_alpha need an even batch size (have {batch_size})")
        from timm.data import Mixup

        return cls(Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha, mode="batch",
                         label_smoothing=cfg.label_smoothing, num_classes=num_classes))

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x float [B, C, H, W] (mixed in place), labels int64 [B] -> (x, soft targets float [B, K])."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng))
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            return self.mixup(x, labels)
        finally:
            np.random.set_state(state)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [B, K] against soft targets [B, K] (rows summing to 1)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
