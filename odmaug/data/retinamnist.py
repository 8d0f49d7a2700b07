"""RetinaMNIST (MedMNIST v2): find the npz locally, or download it and check its md5."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from odmaug.digest import file_digest
from odmaug.download import DownloadFailed, download_checked
from odmaug.errors import MissingDataError, OdmaugError

FILENAME = "retinamnist.npz"
MD5 = "bd4c0672f1bba3e3a89f0e4e876791e4"
URL = "https://zenodo.org/records/10519652/files/retinamnist.npz?download=1"
DATA_DIR_ENV = "ODMAUG_DATA_DIR"
OFFLINE_ENV = "ODMAUG_OFFLINE"
SPLITS = ("train", "val", "test")


def cache_dir() -> Path:
    """The user cache for downloads: ``$XDG_CACHE_HOME/odmaug`` or ``~/.cache/odmaug``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "odmaug"


def _download(dest: Path) -> None:
    try:
        download_checked(URL, dest, "md5", MD5, timeout=30)
    except DownloadFailed as err:
        raise MissingDataError(
            f"{FILENAME} not found and the download failed ({err.reason}); "
            f"put the file in $ODMAUG_DATA_DIR or pass --data-dir (expected md5 {MD5})"
        ) from None


def locate(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Path of a verified ``retinamnist.npz``.

    Looks in ``data_dir``, then ``$ODMAUG_DATA_DIR``, then the user cache; downloads into the cache
    from the official MedMNIST Zenodo record unless ``download`` is False or ``$ODMAUG_OFFLINE`` is
    set. Any file found is md5-checked (once per file version).
    """
    candidates = [Path(d) for d in (data_dir, os.environ.get(DATA_DIR_ENV)) if d]
    candidates.append(cache_dir())
    for folder in candidates:
        path = folder / FILENAME
        if path.is_file():
            _verify(path)
            return path
    if not download or os.environ.get(OFFLINE_ENV):
        looked = ", ".join(str(c) for c in candidates)
        raise MissingDataError(
            f"{FILENAME} not found (looked in {looked}); put it in $ODMAUG_DATA_DIR or pass --data-dir (md5 {MD5})"
        )
    dest = cache_dir() / FILENAME
    _download(dest)
    return dest


def _verify(path: Path) -> None:
    # MedMNIST publishes md5 checksums, so this check stays md5 (file_digest reads each version once)
    if file_digest(path, algorithm="md5") != MD5:
        raise OdmaugError(f"{path} has the wrong md5 (expected {MD5}); replace it with the official file")


@lru_cache(maxsize=4)
def _load_arrays(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as err:
        raise OdmaugError(f"{path}: cannot read the npz ({err})") from None


def load_split(split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 28, 28, 3] uint8 and grades [N] int64 of one split."""
    if split not in SPLITS:
        raise OdmaugError(f"unknown RetinaMNIST split '{split}' (choose from {', '.join(SPLITS)})")
    arrays = _load_arrays(str(locate(data_dir)))
    images = arrays[f"{split}_images"]
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    return images, arrays[f"{split}_labels"].reshape(-1).astype(np.int64)
