"""Figures shared by every stage: labelled image grids (one row per grade)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from odmaug.atomic import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically (tight layout), close it, return the path."""
    path = Path(path)  # atomic_path makes the folder (and reports a file in the way as one error line)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path


def grade_grid(
    rows: Sequence[torch.Tensor | np.ndarray],
    path: str | Path,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_inches: float = 0.9,
) -> Path:
    """Save a grid PNG with one labelled row per grade.

    Args:
        rows: per row, uint8 or uint16 images [n, C, H, W] (torch) or [n, H, W, C] (numpy), C = 1
            (drawn in gray) or 3; rows may differ in length (short rows are padded with black).
        path: output PNG, written atomically.
        row_labels: text left of each row (default ``grade g``).
        title: optional figure title.
    """
    arrays = []
    for row in rows:
        arr = row.detach().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
        if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(0, 2, 3, 1)
        if arr.dtype == np.uint16:  # 16-bit grayscale: shown at 8 bits, the most a screen shows
            arr = np.rint(arr / 257.0).astype(np.uint8)
        arrays.append(arr)
    size = max((a.shape[1] for a in arrays if len(a)), default=8)
    ncols = max((len(a) for a in arrays), default=1) or 1
    pad = 2
    canvas = np.zeros((len(arrays) * (size + pad) - pad, ncols * (size + pad) - pad, 3), dtype=np.uint8)
    canvas[:] = 255
    for r, arr in enumerate(arrays):
        for c, img in enumerate(arr):
            if img.shape[-1] == 1:
                img = np.repeat(img, 3, axis=-1)
            y, x = r * (size + pad), c * (size + pad)
            canvas[y : y + img.shape[0], x : x + img.shape[1]] = img
    labels = list(row_labels) if row_labels is not None else [f"grade {g}" for g in range(len(arrays))]
    fig, ax = plt.subplots(figsize=(max(2.0, ncols * cell_inches + 1.0), max(1.5, len(arrays) * cell_inches + 0.4)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([r * (size + pad) + size / 2 for r in range(len(arrays))], labels)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
