"""Image folders (``root/<grade>/<image>``): which files are images, and what was left out."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

import pandas as pd
from PIL import Image

from odmaug.console import warn_once
from odmaug.data.pixels import DICOM_SUFFIXES
from odmaug.errors import OdmaugError


@lru_cache(maxsize=1)
def image_suffixes() -> frozenset[str]:
    """Lower-case suffixes of every format this Pillow opens (PNG, JPEG, TIFF, BMP, WebP, GIF,
    JPEG 2000...: ``Image.registered_extensions()`` less the write-only ones) plus DICOM's."""
    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset(readable | DICOM_SUFFIXES)


def folder_table(root: str | Path, num_classes: int) -> pd.DataFrame:
    """Rows of an image folder ``root/<grade>/<image>`` (no split column).

    Every file with an image suffix (:func:`image_suffixes`) in a grade folder is a row; other
    files (hidden ones aside) are left out with one warning counting them by extension.

    Raises:
        OdmaugError: no such folder, a sub-folder that is not a grade in 0..C-1, no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise OdmaugError(f"image folder not found: {root}")
    rows, skipped = [], Counter()
    suffixes = image_suffixes()
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not sub.name.isdigit():
            raise OdmaugError(f"{sub}: folder name '{sub.name}' is not an integer grade")
        grade = int(sub.name)
        if grade >= num_classes:
            raise OdmaugError(f"{sub}: grade {grade} is outside 0..{num_classes - 1}")
        files = sorted(p for p in sub.iterdir() if not p.name.startswith("."))
        rows += [{"path": str(p.resolve()), "label": grade} for p in files if p.suffix.lower() in suffixes]
        skipped.update(p.suffix.lower() or "(no extension)" for p in files
                       if p.suffix.lower() not in suffixes and p.is_file())
    if skipped:
        counted = ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items()))
        warn_once(f"{root}: {sum(skipped.values())} file(s) that are not images were left out ({counted})")
    if not rows:
        raise OdmaugError(f"{root}: no images found (expected {root}/<grade>/<image>: PNG, JPEG, TIFF, DICOM...)")
    return pd.DataFrame(rows)
