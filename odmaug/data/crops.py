"""Per-image crops that make photographs square before resizing (``data.crop``).

``centre`` keeps the central square (side = the shorter edge). ``fundus`` keeps the circular field
of view of a fundus photograph: the bounding box of the pixels brighter than the dark border, padded
with black to a square around its centre, so the disc is neither squashed nor cut. Both are chosen
per image, so a set mixing cameras and resolutions needs no fixed ``data.crop_box``.

The field of view is the largest bright connected region, not every bright pixel: date stamps,
camera text and thin lines in the border would otherwise widen the box (a 60 x 12 stamp in a
corner moved a 1000 x 800 photograph's box from x = 121 to x = 15, shrinking and shifting the disc).

Source: thresholding the dark border at a tenth of the image's level follows common fundus
preprocessing (B. Graham, winning entry of Kaggle's Diabetic Retinopathy Detection, 2015, measured
the disc where the middle row exceeds a tenth of its mean).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

CROPS = ("none", "centre", "fundus")

FUNDUS_LEVEL = 0.1
"""Field-of-view threshold as a share of the bright level (99th percentile of the brightest channel).

A tenth sits well above JPEG noise in the black border (values up to ~15 of 255 beside the disc)
and well below the dimmest retina at the disc's rim (vignetting halves the level, not more)."""

FUNDUS_FLOOR = 12
"""Absolute minimum threshold (of 255): a dark or blank image must not count its noise as retina."""

LINE_SHARE = 0.01
"""A row (column) is inside the field of view when at least this share of the widest row (column)
is above the threshold, so isolated noise pixels and thin specks in the border do not widen the box."""

SAMPLE_SIDE = 512
"""The connected regions are found on every f-th pixel, f chosen so the longer side has at most
this many samples: opening and labelling a 3872 x 2592 mask takes ~0.19 s, a 484 x 324 one ~4 ms."""

MARGIN = 2
"""Samples around the field of view searched at full resolution for its exact edge: sampling moves
the region's edge by under one sample, and the opening may drop a ragged sample at a noisy rim.
An overlay closer than this to the disc is searched too; a thin one is still ignored (see _line_box)."""

_SQUARE = np.ones((3, 3), dtype=bool)
"""Structuring element: the opening removes anything under three samples thick (lines, small text),
and labelling with it joins diagonal neighbours."""


def centre_box(height: int, width: int) -> tuple[int, int, int, int]:
    """The central square (left, top, right, bottom) in pixels of an image ``height`` x ``width``."""
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def fundus_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom; right/bottom exclusive) of the bright field of view.

    The field of view is the largest connected region of pixels above the threshold after an
    opening (found on a sampled mask, see :data:`SAMPLE_SIDE`); its exact edge is then measured at
    full resolution within :data:`MARGIN` samples of it, so overlays in the border (text, date
    stamps, lines up to 2 pixels thick, even beside the disc) do not move the box. Limits: a line
    through the disc's outermost pixel adds that pixel's row (column), one pixel; a thick overlay
    touching the disc, or within MARGIN samples of it, joins the field of view.

    Args:
        image: uint8 or uint16, RGB [H, W, 3] or grayscale [H, W] / [H, W, 1].

    Returns:
        The box in pixels; the whole image when nothing stands out from the border (a blank or
        uniformly bright picture, or only thin lines), so such images are only padded to a square.
    """
    # Brightest channel [H, W]: the border is dark in every channel. Pairwise maximum, because
    # image.max(axis=2) is ten times slower on a 10-megapixel photograph.
    if image.ndim == 3 and image.shape[2] == 3:
        bright = np.maximum(np.maximum(image[..., 0], image[..., 1]), image[..., 2])
    else:
        bright = image.reshape(image.shape[:2])  # grayscale [H, W] or [H, W, 1]
    height, width = bright.shape
    level = float(np.percentile(bright[::4, ::4], 99))  # a 1/16 sample: same level, 16x less sorting
    floor = FUNDUS_FLOOR * (257 if bright.dtype == np.uint16 else 1)  # the same share of 16-bit levels
    threshold = max(FUNDUS_LEVEL * level, floor)
    step = max(1, math.ceil(max(height, width) / SAMPLE_SIDE))
    near = _field_of_view(bright[::step, ::step] > threshold)  # [ceil(H/step), ceil(W/step)]
    if near is None:
        return 0, 0, width, height
    rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
    top, left = rows[0] * step, cols[0] * step
    bottom, right = min((rows[-1] + 1) * step, height), min((cols[-1] + 1) * step, width)
    # Each sample stands for the step x step block it starts; the repeat is cut to the window.
    block = near[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    region = np.repeat(np.repeat(block, step, axis=0), step, axis=1)[:bottom - top, :right - left]
    mask = (bright[top:bottom, left:right] > threshold) & region
    box = _line_box(mask)
    return box[0] + int(left), box[1] + int(top), box[2] + int(left), box[3] + int(top)


def _field_of_view(sampled: np.ndarray) -> np.ndarray | None:
    """The largest opened bright region of a sampled mask, grown by :data:`MARGIN` samples (bool,
    same shape); None when no region survives the opening."""
    opened = ndimage.binary_opening(sampled, structure=_SQUARE)
    labels, count = ndimage.label(opened, structure=_SQUARE)
    if count == 0:
        return None
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1  # label 0 is the background
    return ndimage.binary_dilation(labels == largest, structure=_SQUARE, iterations=MARGIN)


def _line_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) of the rows and columns of ``mask`` [H, W] that hold at least
    :data:`LINE_SHARE` of the fullest one; ``mask`` must hold a True pixel.

    A row counts only its pixels in a vertical run of three or more (a column, a horizontal run),
    so a 1-2 pixel line along the disc's edge, even touching it, adds no row (column) of its own.
    The share is of the fullest row (column) of ``mask`` itself, as before such lines were removed,
    so a clean disc keeps the box it always had.
    """
    keep_rows = _kept(_runs_of_three(mask, axis=0).sum(axis=1, dtype=np.int64), mask.sum(axis=1, dtype=np.int64))
    keep_cols = _kept(_runs_of_three(mask, axis=1).sum(axis=0, dtype=np.int64), mask.sum(axis=0, dtype=np.int64))
    return int(keep_cols[0]), int(keep_rows[0]), int(keep_cols[-1]) + 1, int(keep_rows[-1]) + 1


def _kept(thick: np.ndarray, every: np.ndarray) -> np.ndarray:
    """Indices of the rows (columns) whose ``thick`` count (pixels in runs of three) reaches
    :data:`LINE_SHARE` of the fullest ``every`` count (all pixels); by ``every`` alone when none
    does (a field of view nowhere three pixels thick, as a sparse pattern may be), so the box is
    never empty."""
    least = max(LINE_SHARE * every.max(), 1)
    kept = np.flatnonzero(thick >= least)
    return kept if len(kept) else np.flatnonzero(every >= least)


def _runs_of_three(mask: np.ndarray, axis: int) -> np.ndarray:
    """Pixels of ``mask`` in a run of at least three along ``axis``: a 1-D opening, as
    ``scipy.ndimage.binary_opening`` with a 3-pixel line gives, but ~30x faster on 6 megapixels."""
    m = np.moveaxis(mask, axis, 0)
    whole = m[:-2] & m[1:-1] & m[2:]  # [n - 2, ...]: pixels i, i + 1, i + 2 all set
    out = np.zeros_like(m)
    out[:-2] |= whole
    out[1:-1] |= whole
    out[2:] |= whole
    return np.moveaxis(out, 0, axis)


def pad_square(image: np.ndarray) -> np.ndarray:
    """``image`` [H, W, C] centred on a black square [S, S, C], S = max(H, W)."""
    height, width = image.shape[:2]
    side = max(height, width)
    out = np.zeros((side, side) + image.shape[2:], dtype=image.dtype)
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = image
    return out


def crop_image(image: np.ndarray, crop: str) -> np.ndarray:
    """Apply ``crop`` (one of :data:`CROPS`) to [H, W, C] (uint8 or uint16); the result is square unless ``none``."""
    if crop == "none":
        return image
    if crop == "centre":
        left, top, right, bottom = centre_box(*image.shape[:2])
        return image[top:bottom, left:right]
    if crop == "fundus":
        left, top, right, bottom = fundus_box(image)
        return pad_square(image[top:bottom, left:right])
    raise ValueError(f"unknown crop {crop!r} (use one of {', '.join(CROPS)})")
