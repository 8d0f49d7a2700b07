"""Decode cache: prepared (decoded, cropped, resized) images on disk, shared by stages and processes.

Preparing a 3872 x 2592 JPEG takes ~0.3 s on one core (decode 0.1-0.2 s, fundus crop 0.04 s, resize
0.1 s), and a pipeline needs each real image in several stages (generator, classifier, metrics). The first pass stores each prepared image as one uint8 ``.npy``
[size, size, 3] under ``<cache_dir>/<key[:2]>/<key>.npy``; later passes load it instead.

The key is a sha256 over the file's content digest (blake2b, so a changed file misses even at the
same path), the crop (``data.crop`` and ``data.crop_box``), the size, :data:`PREP_VERSION` and the
Pillow version (its resampling defines the pixels). Entries are written atomically (temporary file
and rename), so concurrent stages or DataLoader workers never read half a file; an unreadable or
mis-shaped entry is a miss and is rewritten. Nothing is pickled (``np.load(allow_pickle=False)``).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import PIL

from odmaug.errors import OdmaugError

PREP_VERSION = 1
"""Bump when decoding, cropping or resizing changes the pixels, so old entries stop matching."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/odmaug/images`` (default ``~/.cache/odmaug/images``)."""
    from odmaug.data.retinamnist import cache_dir

    return cache_dir() / "images"


def resolve_cache_dir(enabled: bool, folder: Optional[str]) -> Optional[str]:
    """The cache folder for ``data.cache`` / ``data.cache_dir``; None when the cache is off."""
    if not enabled:
        return None
    return str(Path(folder).expanduser() if folder else default_cache_dir())


@lru_cache(maxsize=65536)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """blake2b-128 of the file's bytes; memoised per (path, size, mtime) within a process."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str) -> str:
    """Content digest of an image file.

    Raises:
        OdmaugError: the file is missing or unreadable (the message names it).
    """
    try:
        stat = os.stat(path)
        return _digest(str(path), stat.st_size, stat.st_mtime_ns)
    except FileNotFoundError:
        raise OdmaugError(f"image not found: {path}") from None
    except OSError as err:
        raise OdmaugError(f"cannot read image {path}: {err.strerror}") from None


def entry_path(cache_dir: str | Path, path: str, crop: str, crop_box, size: int) -> Path:
    """Where the prepared image of file ``path`` (crop mode, crop box, size in pixels) is cached."""
    material = {
        "version": PREP_VERSION,
        "pillow": PIL.__version__,
        "file": file_digest(path),
        "crop": crop,
        "crop_box": [int(v) for v in crop_box] if crop_box is not None else None,
        "size": int(size),
    }
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / key[:2] / f"{key}.npy"


def load_entry(entry: Path, size: int) -> Optional[np.ndarray]:
    """The cached uint8 [size, size, 3] image, or None when absent, unreadable or mis-shaped."""
    try:
        image = np.load(entry, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if image.dtype != np.uint8 or image.shape != (size, size, 3):
        return None
    return image


_UNWRITABLE: set[str] = set()
"""Cache folders that refused a write in this process (warned about once, then skipped)."""


def store_entry(entry: Path, image: np.ndarray) -> None:
    """Write ``image`` to ``entry`` atomically; a failed write warns once and is otherwise ignored.

    A cache must never stop a stage: a read-only or full disk only costs the decode next time.
    """
    from odmaug.atomic import atomic_path
    from odmaug.console import warn

    root = str(entry.parent.parent)
    if root in _UNWRITABLE:
        return
    try:
        with atomic_path(entry) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(image), allow_pickle=False)  # a handle: np.save adds no suffix
    except OSError as err:  # WriteError is an OSError too
        _UNWRITABLE.add(root)
        warn(f"image cache {root} is not writable ({err}): images are decoded again next time")
