"""Pixel formats: how many channels and how many bits per level prepared images carry.

A table's images are prepared in one format, ``(channels, bits)``: channels 1 (grayscale) or 3
(RGB), bits 8 (uint8, 0..255) or 16 (uint16, 0..65535). Colour photographs are ``(3, 8)``, as
they always were; a set of grayscale radiographs is ``(1, 8)``, and 16-bit PNG, TIFF or DICOM
images make it ``(1, 16)`` so the networks see their full range instead of 256 levels.

``data.channels: auto`` is 1 when every image of the set is grayscale by its file's mode (an
RGB JPEG whose three channels happen to be equal counts as colour), else 3. The bits are 16 when
any image has more than 8 bits per level (16-bit PNG/TIFF, 32-bit integer or float TIFF, DICOM
grayscale), else 8. Both come from the files' headers (:func:`file_kind`), not their pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from PIL import Image

DICOM_SUFFIXES = {".dcm", ".dicom"}
JPEG_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}
"""JPEG holds 8-bit levels only (in Pillow): once a set is known to be colour, its JPEGs need no look."""

GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
DEEP_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
"""Pillow modes with more than 8 bits per level: 16-bit PNG/TIFF (I;16*), 32-bit integer (I) and float (F)."""


@dataclass(frozen=True)
class PixelFormat:
    """The format of prepared pixels: ``channels`` (1 or 3) and ``bits`` (8 or 16) per level."""

    channels: int = 3
    bits: int = 8

    @property
    def dtype(self) -> np.dtype:
        """numpy uint8 (8 bits) or uint16 (16 bits)."""
        return np.dtype(np.uint8 if self.bits == 8 else np.uint16)

    def describe(self) -> str:
        """``1 channel (grayscale), 16-bit levels``-style text for notes and logs."""
        kind = "1 channel (grayscale)" if self.channels == 1 else "3 channels (RGB)"
        return f"{kind}, {self.bits}-bit levels"


COLOUR = PixelFormat(3, 8)


def peak(dtype) -> float:
    """The largest level of a uint8 (255) or uint16 (65535) array or tensor dtype."""
    name = str(dtype).removeprefix("torch.")
    return 65535.0 if name == "uint16" else 255.0


def convert(image: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """``image`` uint8 or uint16 [H, W, 1 or 3] in ``fmt``: [H, W, fmt.channels] of ``fmt.dtype``.

    Levels widen exactly (v * 257: 255 -> 65535) and narrow by rounding (v / 257). Gray becomes
    RGB by repetition; RGB becomes gray by ITU-R 601-2 luma, as Pillow's ``convert("L")`` does
    (which computes the 8-bit case, so it equals Pillow bit for bit). A ``(3, 8)`` RGB image is
    returned as it is.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 3 and fmt.channels == 1:
        image = _luma(image)
    elif image.shape[2] == 1 and fmt.channels == 3:
        image = np.repeat(image, 3, axis=2)
    if image.dtype == fmt.dtype:
        return image
    if fmt.bits == 16:
        return image.astype(np.uint16) * np.uint16(257)
    return np.clip(np.rint(image.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _luma(image: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3] -> gray [H, W, 1] of the same dtype (L = 0.299 R + 0.587 G + 0.114 B)."""
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image, "RGB").convert("L"))[:, :, None]
    gray = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.rint(gray), 0, 65535).astype(np.uint16)[:, :, None]


@lru_cache(maxsize=65536)
def _kind(path: str, size: int, mtime_ns: int) -> tuple[bool, bool]:
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        from odmaug.data.dicom import dicom_kind

        return dicom_kind(path)
    try:
        with Image.open(path) as img:
            mode = img.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False, False  # unreadable: decoding names the file later; colour is the safe default
    return mode in GRAY_MODES, mode in DEEP_MODES


def file_kind(path: str) -> tuple[bool, bool]:
    """(grayscale, deep) of an image file from its header: mode L/I;16/F... is grayscale, modes
    with more than 8 bits per level are deep; DICOM by PhotometricInterpretation and BitsStored.
    Memoised per (path, size, mtime). An unreadable file counts as (False, False)."""
    try:
        stat = os.stat(path)
    except OSError:
        return False, False
    return _kind(str(path), stat.st_size, stat.st_mtime_ns)


def ref_kind(ref: str) -> Optional[tuple[bool, bool]]:
    """(grayscale, deep) of an in-memory reference (``retinamnist://``, ``synthetic://``); None for a file."""
    from odmaug.data.schemes import RETINAMNIST_SCHEME, SYNTHETIC_SCHEME

    if ref.startswith(SYNTHETIC_SCHEME):
        from odmaug.data.radiograph import RADIOGRAPH

        return ref[len(SYNTHETIC_SCHEME):].startswith(RADIOGRAPH + "/"), False
    if ref.startswith(RETINAMNIST_SCHEME):
        return False, False
    return None


def resolve_format(refs: Iterable[str], channels: Optional[int]) -> PixelFormat:
    """The :class:`PixelFormat` of a set of image references; ``channels`` None means auto.

    Reads file headers only, and skips JPEGs once the set is known to be colour (or its channels
    are given), so a folder of colour photographs costs one header.
    """
    gray_all, deep_any, seen = True, False, False
    for ref in refs:
        seen = True
        ref = str(ref)
        colour_known = channels is not None or not gray_all
        if colour_known and Path(ref).suffix.lower() in JPEG_SUFFIXES:
            continue
        gray, deep = ref_kind(ref) or file_kind(ref)
        gray_all, deep_any = gray_all and gray, deep_any or deep
    gray = gray_all and seen  # an empty set stays colour, as every set was before channels existed
    return PixelFormat(channels if channels is not None else (1 if gray else 3), 16 if deep_any else 8)


def png_mode(fmt: PixelFormat) -> tuple[str, int]:
    """(Pillow mode, bits) of the PNGs that images of ``fmt`` are written as: ``RGB`` 8-bit,
    ``L`` 8-bit, or ``I;16`` (16-bit grayscale). Pillow writes no 48-bit RGB PNG, so 16-bit colour
    images are written with 8 bits per channel."""
    if fmt.channels == 3:
        return "RGB", 8
    return ("I;16", 16) if fmt.bits == 16 else ("L", 8)


def png_image(image: np.ndarray) -> Image.Image:
    """uint8 [H, W, 3] (RGB), uint8 [H, W, 1] (L) or uint16 [H, W, 1] (I;16) as a PIL image for a PNG."""
    if image.shape[2] == 3:
        return Image.fromarray(image, "RGB")
    if image.dtype == np.uint16:
        return Image.fromarray(np.ascontiguousarray(image[:, :, 0]))  # uint16 [H, W] opens as I;16
    return Image.fromarray(np.ascontiguousarray(image[:, :, 0]), "L")
