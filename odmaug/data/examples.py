"""Example images of a dataset, one row per grade (``odmaug data info --grid``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from odmaug.data.images import prepared
from odmaug.data.table import ImageTable
from odmaug.errors import OdmaugError


def example_rows(table: ImageTable, per_grade: int, size: int, crop_box, seed: int) -> list[np.ndarray]:
    """Up to ``per_grade`` prepared images [n, size, size, 3] uint8 of every grade, chosen reproducibly by ``seed``."""
    rng = np.random.default_rng(seed)
    rows = []
    for grade in range(table.num_classes):
        idx = np.flatnonzero(table.labels == grade)
        chosen = np.sort(rng.choice(idx, size=min(per_grade, len(idx)), replace=False)) if len(idx) else []
        rows.append(np.stack([prepared(table, int(i), size, crop_box) for i in chosen])
                    if len(chosen) else np.zeros((0, size, size, 3), np.uint8))
    return rows


def example_grid(table: ImageTable, split: str, path: Path, per_grade: int, size: int, crop_box, seed: int) -> Path:
    """A PNG grid of :func:`example_rows` from ``split`` of ``table`` at ``size`` pixels; returns ``path``.

    Raises:
        OdmaugError: ``table`` has no (or an empty) ``split``.
    """
    from odmaug.figures import grade_grid

    part = table.split(split) if split in table.splits() else None
    if part is None or len(part) == 0:
        raise OdmaugError(f"no '{split}' split to draw examples from (have {', '.join(table.splits())})")
    rows = example_rows(part, per_grade, size, crop_box, seed)
    return grade_grid(rows, path, title=f"{table.name} ({split}, {size}px)")
