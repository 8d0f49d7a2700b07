"""What a folder or manifest of real photographs needs checked: patients, shapes, small splits.

Every warning here goes through :func:`warn_once`, so a command that loads its data twice (a
classifier's train and val splits, say) says each thing once.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from odmaug.console import note_once, warn_once
from odmaug.errors import OdmaugError

ASPECT_SAMPLE = 256
"""Image headers read to check aspect ratios (evenly spaced rows): a fixed cost, ~0.1 s on a local
disk, whatever the size of the set; a shape only a few images have may go unseen."""


def groups_from_pattern(paths: list[str], pattern: str, origin: str) -> np.ndarray:
    """The patient id per row: ``pattern``'s capture group searched in each file name, shape (N,).

    Raises:
        OdmaugError: a file name the pattern does not match (or matches with an empty group);
            the message names up to three of them and their count.
    """
    regex = re.compile(pattern)
    groups, missed = [], []
    for path in paths:
        match = regex.search(Path(path).name)
        if match is None or not match.group(1):
            missed.append(path)
        groups.append(match.group(1) if match else None)
    if missed:
        shown = ", ".join(missed[:3]) + (f" and {len(missed) - 3} more" if len(missed) > 3 else "")
        raise OdmaugError(f"{origin}: data.group_pattern '{pattern}' does not match the file name of {shown}")
    return np.asarray(groups, dtype=object)


def warn_no_groups(name: str) -> None:
    """Say that drawn splits ignore patients (both eyes of one patient may straddle splits)."""
    warn_once(f"{name}: no patient groups, so both eyes of a patient may straddle splits "
              "(set data.group_pattern or a manifest 'group' column)")


def _image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file's header, or None when unreadable (decoding reports it later)."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def warn_aspect(frame: pd.DataFrame, name: str) -> None:
    """Warn when real file images are not square, or vary in shape, and would be squashed.

    Reads the headers of at most :data:`ASPECT_SAMPLE` evenly spaced real (non-generated) rows.
    """
    paths = [p for p, s in zip(frame["path"], frame["source"]) if s != "synthetic" and "://" not in str(p)]
    if not paths:
        return
    picks = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), ASPECT_SAMPLE)).round().astype(int))
    sizes = {p: s for p in (paths[i] for i in picks) if (s := _image_size(p)) is not None}
    if not sizes:
        return
    ratio = {p: w / h for p, (w, h) in sizes.items()}
    low, high = min(ratio, key=ratio.get), max(ratio, key=ratio.get)
    fix = "set data.crop (fundus or centre) or data.crop_box"
    seen = f"{len(sizes)} of {len(paths)} checked" if len(sizes) < len(paths) else f"all {len(paths)}"
    if ratio[high] / ratio[low] > 1.01:  # 1 %: rounding of odd sizes (2592 x 2591) is not a new shape
        shapes = [f"{sizes[p][0]}x{sizes[p][1]} ({Path(p).name})" for p in (low, high)]
        warn_once(f"{name}: aspect ratios vary from {shapes[0]} to {shapes[1]} ({seen}), "
                  f"squashed unevenly: {fix}")
    elif abs(ratio[low] - 1) > 0.01:
        width, height = sizes[low]
        warn_once(f"{name}: images are {width}x{height} ({seen}), squashed to a square: {fix}")


def warn_small_splits(frame: pd.DataFrame, num_classes: int, minimum: int, name: str, skip_empty: bool) -> None:
    """One warning per split that holds fewer than ``minimum`` real images of some grade.

    Generated rows (``source == "synthetic"``) do not count: they never evaluate anything.

    Args:
        frame: rows with ``label``, ``split`` and ``source``.
        skip_empty: leave out grades a split lacks altogether (drawn splits: their own warning
            already says why).
    """
    real = frame[frame["source"] != "synthetic"]
    for split in ("train", "val", "test"):
        labels = real.loc[real["split"] == split, "label"].to_numpy()
        if minimum <= 0 or len(labels) == 0:
            continue
        counts = np.bincount(labels, minlength=num_classes)
        few = [(g, int(c)) for g, c in enumerate(counts) if c < minimum and not (skip_empty and c == 0)]
        if few:
            listed = ", ".join(f"grade {g} ({c})" for g, c in few)
            warn_once(f"{name}: split '{split}' has under {minimum} images of {listed}: "
                      "per-grade results there are noise (data.min_split_images)")


def apply_pixel_settings(table, cfg, origin: str) -> None:
    """Give ``table`` (an :class:`odmaug.data.table.ImageTable`) the recipe's ``data.channels``
    and ``data.window``, resolve its pixel format, and say which it is when it is not colour 8-bit.

    The note is printed once per command; the generator's checkpoint, its ``train_start`` log
    event and every classifier's ``classifier.json`` record the format too.
    """
    table.channels = None if cfg.channels == "auto" else int(cfg.channels)
    table.bits = None
    table.window = tuple(cfg.window) if cfg.window is not None else None
    fmt = table.pixel_format()
    if (fmt.channels, fmt.bits) != (3, 8):
        why = "data.channels: auto, every image is grayscale" if cfg.channels == "auto" and fmt.channels == 1 \
            else f"data.channels: {cfg.channels}"
        note_once(f"{origin}: images are prepared as {fmt.describe()} ({why})")
