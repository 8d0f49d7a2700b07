"""The synthetic-row levers of classifier training: the share of synthetic images in every batch
(``classifier.synthetic_batch_share``) and their own label smoothing
(``classifier.synthetic_label_smoothing``), as users of diffusion augmentation report them
(Diff-Mix, DA-Fusion).

A row is synthetic when the training table's ``source`` column says ``synthetic``; every other row
(``real``, ``oversampled``) belongs to the real pool. A lever acts only on a table that has both
pools: for the ``real`` and ``oversample`` arms it is inactive, their training is that of an
unset lever bit for bit, and their stage keys stay as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from odmaug.classify.step import epoch_order
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError

LEVER_FIELDS = frozenset({"synthetic_batch_share", "synthetic_label_smoothing"})
"""The ClassifierConfig fields of the levers."""


def synthetic_rows(table: ImageTable) -> np.ndarray:
    """bool [N]: which rows of ``table`` are synthetic (its ``source`` column)."""
    return (table.frame["source"] == "synthetic").to_numpy(dtype=bool, copy=True)


@dataclass(frozen=True)
class SyntheticLevers:
    """The levers that act on one training table (None: inactive)."""

    batch_share: Optional[float] = None
    label_smoothing: Optional[float] = None

    @classmethod
    def active(cls, cfg: Any, train: ImageTable) -> "SyntheticLevers":
        """The levers of ``cfg`` (ClassifierConfig) that act on ``train``: none unless it has both
        synthetic and other rows."""
        synthetic = synthetic_rows(train)
        if not synthetic.any() or synthetic.all():
            return cls()
        return cls(cfg.synthetic_batch_share, cfg.synthetic_label_smoothing)

    def record(self) -> dict[str, float]:
        """The active levers by their config names ({} when none acts)."""
        values = {"synthetic_batch_share": self.batch_share, "synthetic_label_smoothing": self.label_smoothing}
        return {k: v for k, v in values.items() if v is not None}


def keyed_settings(cfg: Any, train: ImageTable, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``cfg`` (ClassifierConfig) as JSON for a stage key, less ``exclude``, with the levers only
    where they act on ``train``: a lever that is unset, or set but inactive for this table, leaves
    the key of today's settings unchanged (a stored classifier is found again)."""
    settings = cfg.model_dump(mode="json", exclude=set(exclude) | LEVER_FIELDS)
    settings.update(SyntheticLevers.active(cfg, train).record())
    return settings


def synthetic_per_batch(share: float, batch_size: int, steps: int) -> list[int]:
    """Synthetic images in each of ``steps`` batches: the running total is ``share * batch_size *
    i`` rounded, so every batch holds floor or ceil of ``share * batch_size`` and the epoch as a
    whole holds the share (to one image)."""
    totals = [math.floor(i * share * batch_size + 0.5) for i in range(steps + 1)]
    return [b - a for a, b in zip(totals, totals[1:])]


def _stream(pool: torch.Tensor, labels: torch.Tensor, count: int, balanced: bool,
            rng: torch.Generator) -> torch.Tensor:
    """``count`` rows of ``pool`` (row indices [P]): shuffled passes over it (or class-balanced
    draws within it), as many as ``count`` needs."""
    parts, have = [], 0
    while have < count:
        parts.append(pool[epoch_order(labels[pool], balanced, rng)])
        have += len(parts[-1])
    return torch.cat(parts)[:count] if parts else pool[:0]


def mixed_epoch_order(labels: torch.Tensor, synthetic: torch.Tensor, share: float, batch_size: int, steps: int,
                      balanced: bool, rng: torch.Generator) -> torch.Tensor:
    """Row indices of one epoch [steps * batch_size], batch after batch, each batch with its
    :func:`synthetic_per_batch` count from the synthetic rows and the rest from the others.

    The epoch keeps the length of a plain one (``steps`` batches over all rows), so the
    learning-rate schedule and the compute do not depend on the share: a share above the table's
    own repeats synthetic images within the epoch and shows fewer real ones. Each pool is drawn
    from shuffled passes (``balanced``: class-balanced draws within the pool), every draw from
    ``rng``, so the order follows from its state at the start of the epoch (which a resumed
    run restores). Inside a batch the synthetic rows come first: the loss is a mean, and
    augmentation draws are independent per image, so the place in a batch changes nothing.

    Args:
        labels: int64 [N] grades; synthetic: bool [N]; both on the CPU.

    Raises:
        OdmaugError: one of the two pools is empty.
    """
    pools = torch.nonzero(synthetic).flatten(), torch.nonzero(~synthetic).flatten()
    if not (len(pools[0]) and len(pools[1])):
        raise OdmaugError("a synthetic batch share needs both synthetic and other training rows")
    per_batch = synthetic_per_batch(share, batch_size, steps)
    needed = sum(per_batch), steps * batch_size - sum(per_batch)
    fake, real = (_stream(pool, labels, n, balanced, rng) for pool, n in zip(pools, needed))
    batches, f, r = [], 0, 0
    for k in per_batch:
        batches += [fake[f : f + k], real[r : r + batch_size - k]]
        f, r = f + k, r + batch_size - k
    return torch.cat(batches)


def row_smoothing(cfg: Any, levers: SyntheticLevers, synthetic: np.ndarray) -> Optional[torch.Tensor]:
    """float32 [N] label smoothing per training row (synthetic rows: the lever; the others:
    ``cfg.label_smoothing``), or None when the lever is inactive (one smoothing for all)."""
    if levers.label_smoothing is None:
        return None
    return torch.from_numpy(np.where(synthetic, levers.label_smoothing, cfg.label_smoothing).astype(np.float32))
