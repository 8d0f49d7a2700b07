"""Reference-set feature cache: real images' features reused until anything that shapes them changes.

The key is a sha256 (:mod:`odmaug.digest`) over (format, dataset identity, resolution, crop,
preparation identity, extractor identity):

- dataset identity: every row's reference, grade, split and source (generated rows are not
  cropped), plus the content of every file (``retinamnist://`` rows: the verified md5 of
  ``retinamnist.npz``; ``synthetic://`` rows: the source of the drawing code), so editing,
  adding or relabelling one image changes the key;
- resolution, crop mode and crop box the images are prepared with;
- preparation identity (:func:`odmaug.data.decode_cache.prep_identity`: decode-cache version, Pillow,
  crop code), the same one the decode cache keys on, so a change that re-decodes the images
  also recomputes their features;
- extractor identity (network, layer and weights hash).

Entries are ``.npz`` files (``features`` float32 [N, D], ``labels`` int64 [N], ``key``) read with
``allow_pickle=False`` and written atomically; an unreadable or mismatching entry is recomputed.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from odmaug.atomic import atomic_path
from odmaug.console import warn
from odmaug.data import retinamnist
from odmaug.data.decode_cache import pixel_key, prep_identity
from odmaug.data.schemes import RETINAMNIST_SCHEME, SYNTHETIC_SCHEME
from odmaug.data.table import ImageTable
from odmaug.digest import file_digest, json_digest, rows_digest

CACHE_FORMAT = 3
"""Bump when the key or the entry layout changes, so old entries miss instead of being misread.

3: the key holds the preparation identity and each row's source."""


def default_feature_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/odmaug/fid-stats`` (default ``~/.cache/odmaug/fid-stats``)."""
    return retinamnist.cache_dir() / "fid-stats"


@lru_cache(maxsize=1)
def _synthetic_code_digest() -> str:
    from odmaug.data import synthetic

    return file_digest(synthetic.__file__)


def _content_digest(ref: str) -> str:
    if ref.startswith(RETINAMNIST_SCHEME):
        return f"md5:{retinamnist.MD5}"  # the loader only accepts the file with this md5
    if ref.startswith(SYNTHETIC_SCHEME):
        return f"code:{_synthetic_code_digest()}"  # pixels follow from the reference and the code
    return file_digest(ref)  # memoised per file: the decode cache's key reads it too, once


def reference_set_digest(table: ImageTable) -> str:
    """sha256 over every row's (reference, grade, split, source, file content) and the number of grades."""
    frame = table.frame
    rows = pd.DataFrame({
        "path": frame["path"].astype(str).to_numpy(),
        "label": frame["label"].astype(int).to_numpy(),
        "split": frame["split"].to_numpy(),
        "source": frame["source"].astype(str).to_numpy(),  # decides whether data.crop applies to the row
        "content": [_content_digest(str(ref)) for ref in frame["path"]],
    })
    return json_digest({"grades": table.num_classes, "rows": rows_digest(rows, rows.columns)})


def feature_cache_key(table: ImageTable, size: int, crop_box, extractor_identity: str) -> str:
    """The cache key of ``table``'s features (see the module docstring)."""
    return json_digest({
        "format": CACHE_FORMAT,
        "dataset": reference_set_digest(table),
        "size": int(size),
        "crop_box": list(crop_box) if crop_box else None,
        "crop": getattr(table, "crop", "none"),  # data.crop (centre, fundus) changes the pixels too
        "prep": prep_identity(pixel_key(table)),  # what turns the files into pixels, as the decode cache keys it
        "extractor": extractor_identity,
    })


def cache_path(cache_dir: Path, table: ImageTable, key: str) -> Path:
    """``<cache_dir>/<dataset name>-<key prefix>.npz`` (the name only helps a human browsing)."""
    label = re.sub(r"[^A-Za-z0-9_.+-]+", "_", table.name).strip("_")[:60] or "dataset"
    return Path(cache_dir) / f"{label}-{key[:24]}.npz"


def _read(path: Path, key: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            features, labels = data["features"], data["labels"]
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - a damaged entry is recomputed, not fatal
        warn(f"ignoring unreadable feature cache {path} ({type(err).__name__}); recomputing")
        return None
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        warn(f"ignoring malformed feature cache {path}; recomputing")
        return None
    return features.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)


def _write(path: Path, key: str, features: np.ndarray, labels: np.ndarray) -> None:
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            # A file object, not a path: np.savez would append ".npz" to the temporary name.
            np.savez(fh, features=features.astype(np.float32), labels=labels.astype(np.int64), key=np.str_(key))
    except OSError as err:  # a read-only cache must not stop the metrics
        warn(f"could not write feature cache {path} ({err.strerror}); results are unaffected")


def cached_features(
    table: ImageTable,
    size: int,
    crop_box,
    extractor_identity: Optional[str],
    compute: Callable[[], tuple[np.ndarray, np.ndarray]],
    cache_dir: Optional[str | Path] = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features and labels of ``table`` from the cache, or from ``compute()`` (then stored).

    Args:
        table: the image set (its rows and file contents are part of the key).
        size: side length the images are prepared at.
        crop_box: crop applied before resizing, or None.
        extractor_identity: the extractor's identity; None disables caching (no safe key).
        compute: returns (features float32 [N, D], labels int64 [N]) on a miss.
        cache_dir: cache folder (default :func:`default_feature_cache_dir`).

    Returns:
        (features [N, D], labels [N], info) with ``info = {"cache": "hit"|"miss"|"off", "path": ...}``.
    """
    if extractor_identity is None:
        features, labels = compute()
        return features, labels, {"cache": "off", "path": None}
    key = feature_cache_key(table, size, crop_box, extractor_identity)
    path = cache_path(Path(cache_dir) if cache_dir else default_feature_cache_dir(), table, key)
    hit = _read(path, key)
    if hit is not None and len(hit[1]) == len(table) and np.array_equal(hit[1], table.labels):
        return hit[0], hit[1], {"cache": "hit", "path": str(path)}
    features, labels = compute()
    _write(path, key, features, labels)
    return features, labels, {"cache": "miss", "path": str(path)}
