"""The classifier's heads: ``softmax`` (C logits, cross-entropy) and ``corn``, the rank-consistent
ordinal head of Shi, Cao & Raschka 2023 ("Deep neural networks for rank-consistent ordinal
regression based on conditional probabilities", Pattern Anal. Appl. 26; reference code:
coral-pytorch's ``corn_loss`` and ``corn_label_from_logits``).

A CORN head has K - 1 logits for K grades. Logit k models the conditional probability
``P(y > k | y > k - 1)`` (k = 0: ``P(y > 0)``), and task k is trained only on the images with
``y > k - 1`` (its conditional subset), with the binary target ``y > k``. Then

* cumulative probabilities ``P(y > k) = prod_{j <= k} sigmoid(logit_j)`` (non-increasing in k:
  rank-consistent by construction);
* the predicted grade is ``sum_k [P(y > k) > 0.5]`` (the paper's rule; not the argmax of the
  grade probabilities below, which can differ);
* grade probabilities ``P(y = 0) = 1 - P(y > 0)``, ``P(y = k) = P(y > k - 1) - P(y > k)``,
  ``P(y = K - 1) = P(y > K - 2)``: non-negative, summing to 1 (``predictions.csv``'s ``prob_*``).

The loss is the binary cross-entropy summed over every (image, task) pair of the conditional
subsets, divided by the number of such pairs (coral-pytorch's normalisation). odmaug extends it
two ways, both reducing to the reference at their defaults: grade weights ``w`` [K] weigh each
image's pairs (sum of weighted losses / sum of weighted pair counts, torch's weighted-mean
convention), and label smoothing ``e`` softens each binary target to ``(1 - e) t + e / 2``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

HEADS = ("softmax", "corn")


def head_outputs(head: str, num_classes: int) -> int:
    """Logits the network emits for ``num_classes`` grades: C (softmax) or C - 1 (corn).

    Raises:
        ValueError: an unknown head.
    """
    if head not in HEADS:
        raise ValueError(f"unknown classifier head '{head}' (use {' or '.join(HEADS)})")
    return num_classes - 1 if head == "corn" else num_classes


def corn_loss(logits: torch.Tensor, labels: torch.Tensor, weight: Optional[torch.Tensor] = None,
              smoothing: float | torch.Tensor = 0.0) -> torch.Tensor:
    """CORN loss (see the module docstring): logits float [B, K-1], labels int64 [B] in 0..K-1,
    ``weight`` float [K] per grade or None, ``smoothing`` one value or float [B] per image.
    Without weight and smoothing it equals coral-pytorch's ``corn_loss(logits, labels, K)``."""
    tasks = torch.arange(logits.shape[1], device=logits.device)
    member = (labels[:, None] >= tasks[None, :]).to(logits.dtype)  # [B, K-1]: y > k - 1
    target = (labels[:, None] > tasks[None, :]).to(logits.dtype)  # [B, K-1]: y > k
    e = torch.as_tensor(smoothing, dtype=logits.dtype, device=logits.device).reshape(-1, 1)
    target = (1.0 - e) * target + e / 2.0
    per_pair = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * member
    w = torch.ones_like(labels, dtype=logits.dtype) if weight is None else weight.to(logits)[labels]  # [B]
    return (w * per_pair.sum(1)).sum() / (w * member.sum(1)).sum().clamp_min(1e-12)


def corn_cumulative(logits: torch.Tensor) -> torch.Tensor:
    """``P(y > k)`` float [N, K-1] from CORN logits [N, K-1] (cumulative product of sigmoids)."""
    return torch.cumprod(torch.sigmoid(logits.float()), dim=1)


def corn_labels(logits: torch.Tensor) -> torch.Tensor:
    """Predicted grades int64 [N] from CORN logits [N, K-1]: how many ``P(y > k)`` exceed 0.5."""
    return (corn_cumulative(logits) > 0.5).sum(dim=1)


def corn_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Grade probabilities float [N, K] from CORN logits [N, K-1] (rows non-negative, summing to 1)."""
    cum = corn_cumulative(logits)
    ones, zeros = torch.ones_like(cum[:, :1]), torch.zeros_like(cum[:, :1])
    above = torch.cat([ones, cum, zeros], dim=1)  # P(y > k - 1) for k = 0..K: [N, K+1]
    return (above[:, :-1] - above[:, 1:]).clamp_min(0.0)


def predicted_grades(logits: torch.Tensor, head: str) -> torch.Tensor:
    """Predicted grades int64 [N] from a head's logits [N, C] (softmax: argmax) or [N, C - 1] (corn: its rule)."""
    return corn_labels(logits) if head == "corn" else logits.argmax(dim=1)


def grade_outputs(logits: torch.Tensor, head: str) -> tuple[np.ndarray, np.ndarray]:
    """(grade probabilities float32 [N, K], predicted grades int64 [N]) from a head's logits:
    softmax and its argmax, or CORN's probabilities and its rule (see the module docstring)."""
    probs = corn_probabilities(logits) if head == "corn" else torch.softmax(logits.float(), dim=1)
    return probs.numpy(), predicted_grades(logits, head).numpy().astype(np.int64)


def grades_from_probabilities(probs: np.ndarray, head: str) -> np.ndarray:
    """Predicted grades int64 [...] from grade probabilities [..., K]: the argmax (softmax), or the
    CORN rule, the first grade whose cumulative probability reaches 0.5 (``P(y > k) > 0.5`` counted)."""
    if head == "corn":
        return (np.cumsum(probs, axis=-1)[..., :-1] < 0.5).sum(axis=-1).astype(np.int64)
    return probs.argmax(axis=-1)


def head_loss(logits: torch.Tensor, labels: torch.Tensor, head: str) -> torch.Tensor:
    """The head's plain loss (no smoothing, no weights), e.g. the validation loss: cross-entropy
    of logits [N, K], or :func:`corn_loss` of logits [N, K-1]; labels int64 [N]."""
    return corn_loss(logits, labels) if head == "corn" else F.cross_entropy(logits, labels)
