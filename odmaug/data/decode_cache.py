"""Decode cache: prepared (decoded, cropped, resized) images on disk, shared by stages and processes.

Preparing a 3872 x 2592 JPEG takes ~0.3 s on one core (decode 0.1-0.2 s, fundus crop 0.04 s, resize
0.1 s), and a pipeline needs each real image in several stages (generator, classifier, metrics). The first pass stores each prepared image as one ``.npy``
[size, size, C] (uint8, or uint16 for 16-bit sets; C = 1 or 3) under ``<cache_dir>/<key[:2]>/<key>.npy``; later passes load it instead.

The key is a sha256 over the file's content digest (:func:`odmaug.digest.file_digest`, so a changed
file misses even at the same path), the crop (``data.crop`` and ``data.crop_box``), the size and
:func:`prep_identity` (the code and library versions that turn a file into pixels, and the table's
pixel format and DICOM window; every cache of something derived from prepared images keys on it too). Entries are written atomically (temporary file
and rename), so concurrent stages or DataLoader workers never read half a file; an unreadable or
mis-shaped entry is a miss and is rewritten. Nothing is pickled (``np.load(allow_pickle=False)``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import PIL

from odmaug.atomic import atomic_path
from odmaug.console import warn
from odmaug.data import crops
from odmaug.data.pixels import COLOUR, PixelFormat
from odmaug.digest import file_digest, json_digest

PREP_VERSION = 3
"""Bump when decoding, cropping or resizing changes the pixels, so old entries stop matching.

2: EXIF orientation is applied when decoding (:func:`odmaug.data.decode.decode_image_file`).
3: transparency is composited on black; 16-bit, float and DICOM images keep their depth."""


def prep_identity(pixels: Optional[dict] = None) -> dict:
    """What shapes prepared pixels besides the file, crop settings and size: the one home of that
    identity, for the decode cache and every cache derived from prepared images.

    Args:
        pixels: the table's :func:`pixel_key` (channels, bits, DICOM window): they change the
            shape, dtype and levels of prepared images.

    Returns:
        ``{"prep": PREP_VERSION, "pillow": Pillow's version (decoding and resampling), "pydicom":
        its version or None, "crop_code": sha256 of odmaug/data/crops.py (its thresholds decide
        the fundus box, and edits there are easy to make without a bump), "pixels": pixels}``.

    Raises:
        OdmaugError: crops.py cannot be read (an installation without its sources).
    """
    return {"prep": PREP_VERSION, "pillow": PIL.__version__, "pydicom": _pydicom_version(),
            "crop_code": file_digest(crops.__file__), "pixels": pixels}


@lru_cache(maxsize=1)  # read per image (every cache entry's key): the installed version does not change
def _pydicom_version() -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pydicom")  # metadata only: importing pydicom itself takes ~0.2 s
    except PackageNotFoundError:
        return None


def pixel_key(table) -> dict:
    """What of ``table`` (an :class:`odmaug.data.table.ImageTable`) shapes its prepared pixels
    besides crops and size: ``{"channels", "bits", "window"}``."""
    fmt = table.pixel_format()
    window = [float(v) for v in table.window] if table.window is not None else None
    return {"channels": fmt.channels, "bits": fmt.bits, "window": window}


def default_image_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/odmaug/images`` (default ``~/.cache/odmaug/images``)."""
    from odmaug.data.retinamnist import cache_dir

    return cache_dir() / "images"


def resolve_cache_dir(enabled: bool, folder: Optional[str]) -> Optional[str]:
    """The cache folder for ``data.cache`` / ``data.cache_dir``; None when the cache is off."""
    if not enabled:
        return None
    return str(Path(folder).expanduser() if folder else default_image_cache_dir())


def entry_path(cache_dir: str | Path, path: str, crop: str, crop_box, size: int,
               pixels: Optional[dict] = None) -> Path:
    """Where the prepared image of file ``path`` (crop mode, crop box, size in pixels, the
    table's :func:`pixel_key`) is cached."""
    material = {
        "prep": prep_identity(pixels),
        "file": file_digest(path),
        "crop": crop,
        "crop_box": [int(v) for v in crop_box] if crop_box is not None else None,
        "size": int(size),
    }
    key = json_digest(material)
    return Path(cache_dir) / key[:2] / f"{key}.npy"


def load_entry(entry: Path, size: int, fmt: PixelFormat = COLOUR) -> Optional[np.ndarray]:
    """The cached [size, size, fmt.channels] image of ``fmt.dtype``, or None when absent,
    unreadable or mis-shaped."""
    try:
        image = np.load(entry, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if image.dtype != fmt.dtype or image.shape != (size, size, fmt.channels):
        return None
    return image


_UNWRITABLE: set[str] = set()
"""Cache folders that refused a write in this process (warned about once, then skipped)."""


def store_entry(entry: Path, image: np.ndarray) -> None:
    """Write ``image`` to ``entry`` atomically; a failed write warns once and is otherwise ignored.

    A cache must never stop a stage: a read-only or full disk only costs the decode next time.
    """
    root = str(entry.parent.parent)
    if root in _UNWRITABLE:
        return
    try:
        with atomic_path(entry) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(image), allow_pickle=False)  # a handle: np.save adds no suffix
    except OSError as err:  # WriteError is an OSError too
        _UNWRITABLE.add(root)
        warn(f"image cache {root} is not writable ({err}): images are decoded again next time")
