"""The classifier's loss options for rare grades: grade weights (``classifier.class_weights``) and
the multi-class focal loss (``classifier.loss: focal``).

* ``inverse`` weights: ``w_c = N / (C * n_c)`` over the training table's grade counts ``n_c``
  (a grade as common as the average weighs 1);
* ``effective`` weights (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of
  Samples"): ``w_c = (1 - beta) / (1 - beta ** n_c)``, scaled to sum to ``C``;
* focal loss (Lin et al. 2017), softmax form: ``-sum_c q_c (1 - p_c) ** gamma log p_c`` with the
  (label-smoothed) target ``q``; at ``gamma = 0`` it is the smoothed cross-entropy.

A weighted loss is the mean of the per-image losses weighted by their grade's weight, divided by
the sum of those weights (torch's ``cross_entropy(weight=...)`` convention). A grade without
training images gets weight 0 (no image of it is ever drawn). With neither option set training
keeps today's cross-entropy bit for bit (:func:`build_criterion` returns None).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

Criterion = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
"""(logits float [B, C], labels int64 [B], per-image smoothing float [B] or None) -> mean loss."""


def grade_weights(counts: np.ndarray, kind: str, beta: float = 0.999) -> torch.Tensor:
    """float32 [C] weights of grades with training counts ``counts`` [C] (see the module docstring).

    Raises:
        ValueError: an unknown ``kind``, or no training images at all.
    """
    n = np.asarray(counts, dtype=np.float64)
    present = n > 0
    if not present.any():
        raise ValueError("grade weights need at least one training image")
    weights = np.zeros_like(n)
    if kind == "inverse":
        weights[present] = n.sum() / (len(n) * n[present])
    elif kind == "effective":
        weights[present] = (1.0 - beta) / (1.0 - beta ** n[present])
        weights *= len(n) / weights.sum()
    else:
        raise ValueError(f"unknown class weights '{kind}' (use inverse or effective)")
    return torch.from_numpy(weights.astype(np.float32))


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float, weight: Optional[torch.Tensor] = None,
               smoothing: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Mean multi-class focal loss: logits [B, C], labels int64 [B]; ``weight`` [C] per grade or
    None; ``smoothing`` one label smoothing or float [B] per image."""
    log_p = F.log_softmax(logits, dim=1)
    num_classes = logits.shape[1]
    e = torch.as_tensor(smoothing, dtype=log_p.dtype, device=log_p.device).reshape(-1, 1)
    target = (1.0 - e) * F.one_hot(labels, num_classes).to(log_p.dtype) + e / num_classes  # [B, C]
    per_image = -(target * (1.0 - log_p.exp()).pow(gamma) * log_p).sum(dim=1)  # [B]
    return _weighted_mean(per_image, labels, weight)


def smoothed_weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor,
                         smoothing: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with per-image label smoothing [B], weighted by grade ``weight`` [C]."""
    return focal_loss(logits, labels, 0.0, weight, smoothing)


def _weighted_mean(per_image: torch.Tensor, labels: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    if weight is None:
        return per_image.mean()
    w = weight.to(per_image.device, per_image.dtype)[labels]
    return (w * per_image).sum() / w.sum()


def build_criterion(cfg: Any, counts: np.ndarray, device: torch.device) -> Optional[Criterion]:
    """The loss of ``cfg`` (ClassifierConfig) for a training table with grade ``counts`` [C], or
    None for today's plain cross-entropy (softmax head, neither ``loss: focal`` nor
    ``class_weights``). ``head: corn``: :func:`odmaug.classify.corn.corn_loss` (logits [B, C-1])."""
    corn = getattr(cfg, "head", "softmax") == "corn"
    if cfg.loss == "cross_entropy" and cfg.class_weights is None and not corn:
        return None
    weight = None
    if cfg.class_weights is not None:
        weight = grade_weights(counts, cfg.class_weights, cfg.class_weights_beta).to(device)
    if corn:
        from odmaug.classify.corn import corn_loss

        return lambda logits, labels, smoothing: corn_loss(
            logits, labels, weight, cfg.label_smoothing if smoothing is None else smoothing)

    def criterion(logits: torch.Tensor, labels: torch.Tensor, smoothing: Optional[torch.Tensor]) -> torch.Tensor:
        e = cfg.label_smoothing if smoothing is None else smoothing
        if cfg.loss == "focal":
            return focal_loss(logits, labels, cfg.focal_gamma, weight, e)
        if smoothing is None:
            return F.cross_entropy(logits, labels, weight=weight, label_smoothing=cfg.label_smoothing)
        return smoothed_weighted_ce(logits, labels, weight, smoothing)

    return criterion
