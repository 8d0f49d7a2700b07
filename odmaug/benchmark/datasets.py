"""Stage 3, datasets: each arm's training table, as its registry entry builds it, per seed.

Validation and test rows stay the real ones for every arm; the manifest written beside the
benchmark (``datasets/<arm>-seed<S>.csv``) holds the training rows, then the real validation and
test rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from odmaug.benchmark.arms import Arm
from odmaug.benchmark.stage import Splits
from odmaug.config import Recipe
from odmaug.data import ImageTable, write_manifest


def training_table(arm: Arm, splits: Splits, synthetic: dict[str, ImageTable], recipe: Recipe,
                   seed: int) -> tuple[ImageTable, Optional[pd.DataFrame]]:
    """The training rows of ``arm`` for ``seed``, and the per-grade counts balancing reports (None
    for an arm that adds nothing)."""
    images = synthetic[arm.synthetic_name] if arm.synthetic_name is not None else None
    return arm.kind.table.build(splits.train, images, recipe.benchmark, seed)


def write_dataset(train: ImageTable, splits: Splits, target: Path) -> Path:
    """One arm's whole dataset as a manifest: its training rows, then the real val and test rows."""
    frame = pd.concat([train.frame, splits.val.frame, splits.test.frame], ignore_index=True)
    return write_manifest(frame, target)
