"""Reference-set feature cache: real images' features reused until anything that shapes them changes.

The key is a sha256 over (dataset identity, resolution, crop, extractor identity):

- dataset identity: every row's reference, grade and split, plus the content of every file
  (``retinamnist://`` rows: the verified md5 of ``retinamnist.npz``; ``synthetic://`` rows: the
  source of the drawing code), so editing, adding or relabelling one image changes the key;
- resolution and crop box the images are prepared with;
- extractor identity (network, layer and weights hash).

Entries are ``.npz`` files (``features`` float32 [N, D], ``labels`` int64 [N], ``key``) read with
``allow_pickle=False`` and written atomically; an unreadable or mismatching entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from odmaug.console import warn
from odmaug.data import retinamnist
from odmaug.data.cache import file_digest
from odmaug.data.table import RETINAMNIST_SCHEME, SYNTHETIC_SCHEME, ImageTable

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/odmaug/fid-stats`` (default ``~/.cache/odmaug/fid-stats``)."""
    return retinamnist.cache_dir() / "fid-stats"


@lru_cache(maxsize=1)
def _synthetic_code_digest() -> str:
    from odmaug.data import synthetic

    return hashlib.sha256(Path(synthetic.__file__).read_bytes()).hexdigest()


def _content_digest(ref: str) -> str:
    if ref.startswith(RETINAMNIST_SCHEME):
        return f"md5:{retinamnist.MD5}"  # the loader only accepts the file with this md5
    if ref.startswith(SYNTHETIC_SCHEME):
        return f"code:{_synthetic_code_digest()}"  # pixels follow from the reference and the code
    return file_digest(ref)  # the decode cache's digest (memoised per file): each file is read once


def table_fingerprint(table: ImageTable) -> str:
    """sha256 over every row's (reference, grade, split, file content) and the number of grades."""
    digest = hashlib.sha256(f"grades={table.num_classes}\n".encode())
    frame = table.frame
    for ref, label, split in zip(frame["path"], frame["label"], frame["split"]):
        digest.update(f"{ref}\t{int(label)}\t{split}\t{_content_digest(str(ref))}\n".encode())
    return digest.hexdigest()


def cache_key(table: ImageTable, size: int, crop_box, extractor_identity: str) -> str:
    """The cache key of ``table``'s features (see the module docstring)."""
    material = {
        "format": CACHE_FORMAT,
        "dataset": table_fingerprint(table),
        "size": int(size),
        "crop_box": list(crop_box) if crop_box else None,
        "extractor": extractor_identity,
    }
    crop = getattr(table, "crop", "none")  # data.crop (centre, fundus) changes the pixels too
    if crop != "none":  # only then: keys of uncropped sets stay valid across versions
        material["crop"] = crop
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


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
    from odmaug.runs import atomic_path

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
        cache_dir: cache folder (default :func:`default_cache_dir`).

    Returns:
        (features [N, D], labels [N], info) with ``info = {"cache": "hit"|"miss"|"off", "path": ...}``.
    """
    if extractor_identity is None:
        features, labels = compute()
        return features, labels, {"cache": "off", "path": None}
    key = cache_key(table, size, crop_box, extractor_identity)
    path = cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), table, key)
    hit = _read(path, key)
    if hit is not None and len(hit[1]) == len(table) and np.array_equal(hit[1], table.labels):
        return hit[0], hit[1], {"cache": "hit", "path": str(path)}
    features, labels = compute()
    _write(path, key, features, labels)
    return features, labels, {"cache": "miss", "path": str(path)}
