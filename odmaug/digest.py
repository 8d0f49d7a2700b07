"""One digest for every identity odmaug records: files, settings, tables and stage keys.

Everything is sha256 (hex), except a file checked against a publisher's md5. A *stage key* names what a stage's result depends on (its settings,
its input tables and its seed): equal keys mean the stored result can be reused, a different key
means it is recomputed. Files are read in 1 MiB blocks and memoised per (path, size, mtime, inode)
within a process, so a file that several stages need is read once; an atomic replacement (a new
inode) is read again even when the clock did not move between the two writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pandas as pd

from odmaug.errors import OdmaugError

_BLOCK = 1 << 20


def _short(hexdigest: str, length: Optional[int]) -> str:
    return hexdigest if length is None else hexdigest[:length]


@lru_cache(maxsize=65536)
def _file_hash(path: str, size: int, mtime_ns: int, inode: int, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | Path, length: Optional[int] = None, algorithm: str = "sha256") -> str:
    """sha256 of a file's bytes (hex; the first ``length`` characters when given).

    ``algorithm`` (a :func:`hashlib.new` name) is for checking a file against a checksum its
    publisher gives in another algorithm (MedMNIST publishes md5); odmaug's own identities are sha256.

    Raises:
        OdmaugError: the file is missing or unreadable (the message names it).
    """
    try:
        stat = os.stat(path)
        return _short(_file_hash(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, algorithm), length)
    except FileNotFoundError:
        raise OdmaugError(f"file not found: {path}") from None
    except OSError as err:
        raise OdmaugError(f"cannot read {path}: {err.strerror}") from None


def bytes_digest(data: bytes, length: Optional[int] = None) -> str:
    """sha256 of bytes already in memory (hex), equal to :func:`file_digest` of a file holding them."""
    return _short(hashlib.sha256(data).hexdigest(), length)


def files_digest(paths: Iterable[str | Path], length: Optional[int] = None) -> str:
    """sha256 over several files, each as (name, content digest): a renamed or changed file changes it."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{Path(path).name}\0{file_digest(path)}\n".encode())
    return _short(digest.hexdigest(), length)


def json_digest(obj: Any, length: Optional[int] = None) -> str:
    """sha256 of ``obj`` as JSON with sorted keys (values JSON cannot hold are written with ``str``)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return _short(hashlib.sha256(text.encode()).hexdigest(), length)


def tensors_digest(named_tensors: Mapping[str, Any] | Iterable[tuple[str, Any]], length: Optional[int] = None) -> str:
    """sha256 over named tensors in order (a state dict, or ``(name, tensor)`` pairs): each tensor's
    name, dtype, shape and bytes count, so equal weights give equal digests on every device.
    """
    import torch  # only the callers that hold tensors pay for importing torch

    pairs = named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors
    digest = hashlib.sha256()
    for name, tensor in pairs:
        plain = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{plain.dtype}\0{tuple(plain.shape)}\0".encode())
        digest.update(plain.reshape(-1).view(torch.uint8).numpy().tobytes())
    return _short(digest.hexdigest(), length)


def rows_digest(frame: pd.DataFrame, columns: Iterable[str], length: Optional[int] = None) -> str:
    """sha256 of the named columns of every row, in order (values as text)."""
    cols = frame[list(columns)].astype(str)
    hashed = pd.util.hash_pandas_object(cols, index=False).to_numpy(dtype=np.uint64)
    return _short(hashlib.sha256(hashed.tobytes()).hexdigest(), length)


def stage_key(settings: Any, tables: Iterable[Any] = (), seed: Optional[int] = None, length: int = 12) -> str:
    """The identity of a stage's result: its settings (JSON), its input tables' rows and its seed.

    ``tables`` holds :class:`~odmaug.data.ImageTable` objects (or None for an absent input); a
    table counts by its rows' path, grade, split and source columns, whichever it has.
    """
    parts = {"settings": settings, "seed": seed, "tables": []}
    for table in tables:
        if table is None:
            parts["tables"].append(None)
            continue
        frame = table.frame
        columns = [c for c in ("path", "label", "split", "source") if c in frame.columns]
        parts["tables"].append(rows_digest(frame, columns))
    return json_digest(parts, length)
