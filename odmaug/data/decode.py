"""Decoding one image file into pixels as displayed: every format Pillow reads, at its own depth.

The result is uint8 or uint16 [H, W, 1 or 3] ("native"): grayscale files keep one channel,
16-bit and deeper files keep 16 bits; :func:`odmaug.data.pixels.convert` then brings it to the
table's format. What each kind of file becomes:

* RGB, CMYK, YCbCr, palette (P) and other colour modes: uint8 RGB (Pillow's ``convert("RGB")``).
* 1-bit and 8-bit grayscale (``1``, ``L``): uint8 gray.
* 16-bit grayscale PNG and TIFF (``I;16``...): uint16 gray, all 65536 levels (scaled by the file's
  bit depth: a 12-bit image stored in 16 bits looks dark, as it does in any viewer).
* 32-bit integer (``I``): uint16 when every value lies in 0..65535, else scaled by its range.
* 32-bit float (``F``, float TIFFs): 0..1 maps onto 0..65535; other ranges are scaled by the
  image's own min..max; NaN or infinite values are refused.
* Transparency (RGBA, LA, palette with a transparent colour): composited on black, the colour of
  a fundus photograph's border, so transparent corners never turn white.

Changing what a file decodes to changes the pixels: bump :data:`odmaug.data.decode_cache.PREP_VERSION`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from odmaug.errors import OdmaugError

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def decode_image_file(path: str | Path) -> np.ndarray:
    """One image file (any format Pillow reads) as uint8 or uint16 [H, W, 1 or 3], as displayed.

    "As displayed": an EXIF Orientation tag (2-8: mirrored and/or rotated by 90, 180 or 270
    degrees) is applied, as viewers do, so a phone or camera photograph stored sideways decodes
    upright and a mirrored one does not swap left and right eyes (Pillow leaves the tag to the
    caller, python-pillow/Pillow issue 1188). Multi-page files (TIFF, GIF) give their first page.

    Raises:
        OdmaugError: the file is missing, or corrupt, unreadable, a decompression bomb (more
            pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` allows twice over) or a float image with
            NaN or infinite values; the message names it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # in place: no 30 MB copy of an upright photo
            return _native(img, path)
    except FileNotFoundError:
        raise OdmaugError(f"image not found: {path}") from None
    except Image.DecompressionBombError as err:
        # PIL refuses before decoding; decoding would take gigabytes, so it is a bad file for us too.
        raise OdmaugError(f"corrupt or unreadable image: {path} (too many pixels: {err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise OdmaugError(f"corrupt or unreadable image: {path} ({err})") from None


def _native(img: Image.Image, path) -> np.ndarray:
    """A loaded PIL image as uint8/uint16 [H, W, 1 or 3] (see the module docstring)."""
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        return _on_black(img)
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"))[:, :, None]
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img).astype(np.uint16)[:, :, None]
    if mode == "I":
        return _scaled(np.asarray(img), path, integer=True)
    if mode == "F":
        return _scaled(np.asarray(img), path, integer=False)
    return np.asarray(img.convert("RGB"))


def _on_black(img: Image.Image) -> np.ndarray:
    """An image with alpha composited on opaque black: uint8 [H, W, 1] for LA, else [H, W, 3]."""
    gray = img.mode in ("LA", "La")
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    rgb = np.asarray(Image.alpha_composite(black, rgba).convert("RGB"))
    return rgb[:, :, :1] if gray else rgb  # an LA image composites to equal R, G and B


def _scaled(values: np.ndarray, path, integer: bool) -> np.ndarray:
    """32-bit integer or float levels [H, W] -> uint16 [H, W, 1] (see the module docstring)."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise OdmaugError(f"corrupt or unreadable image: {path} (float pixels include NaN or infinity)")
    low, high = float(values.min()), float(values.max())
    if integer and low >= 0 and high <= 65535:
        return values.astype(np.uint16)[:, :, None]
    if not integer and low >= 0 and high <= 1:
        return np.rint(values * 65535).astype(np.uint16)[:, :, None]
    span = high - low or 1.0  # a constant image maps to black
    return np.rint((values - low) / span * 65535).astype(np.uint16)[:, :, None]
