"""Every image a command will read, checked before its first step.

A manifest listing a missing validation or test image used to pass every check: training ran all
its epochs (a benchmark trained two generators and a classifier first) and only then stopped at
"image not found", leaving a run folder behind. Tables loaded for a command are checked here as
they are loaded (:func:`odmaug.data.sources.load_table`, :func:`~odmaug.data.sources.table_from_spec`),
so the error comes before any run folder exists, ``--dry-run`` included.

What is checked: a file exists and its header decodes (PIL ``open`` + ``verify``: the format, the
size, a decompression bomb and, for PNG, every chunk's checksum, without decoding pixels); a
format PIL does not know (DICOM) is decoded once by :func:`odmaug.data.table.read_image`; a
``retinamnist://`` reference names an image of its split. Results are kept per (path, modification
time, size) for the process, so a command that loads its data twice reads each header once.
A truncated JPEG body is not caught here (its header is whole): decoding reports it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from PIL import Image, UnidentifiedImageError

from odmaug.data.refs import retinamnist_index
from odmaug.data.schemes import RETINAMNIST_SCHEME, SYNTHETIC_SCHEME
from odmaug.data.table import ImageTable, read_image
from odmaug.errors import OdmaugError

_CHECKED: dict[tuple[str, int, int], Optional[str]] = {}
"""(path, mtime in ns, size in bytes) -> None (fine) or the error line: a changed file is checked again."""
THREADS = 8
"""Header reads wait on the disk, not the CPU: a few threads hide the latency on network storage."""


def _header_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as an image, judged from its header (None: it can)."""
    try:
        with Image.open(path) as img:
            img.verify()
        return None
    except Image.DecompressionBombError as err:
        return f"corrupt or unreadable image: {path} (too many pixels: {err})"
    except UnidentifiedImageError:
        try:  # not a format PIL knows (e.g. DICOM): the decoder commands use is the judge (a full decode)
            read_image(path)
            return None
        except OdmaugError as err:
            return str(err)
    except (OSError, SyntaxError, ValueError) as err:
        return f"corrupt or unreadable image: {path} ({err})"


def file_problem(path: str) -> Optional[str]:
    """Why the image file ``path`` cannot be read (missing, unreadable, corrupt header), or None."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return f"image not found: {path}"
    except OSError as err:
        return f"cannot read image {path}: {err.strerror or err}"
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _CHECKED:
        _CHECKED[key] = _header_problem(path)
    return _CHECKED[key]


def _ref_problem(ref: str, data_dir: Optional[str]) -> Optional[str]:
    try:
        retinamnist_index(ref[len(RETINAMNIST_SCHEME):], data_dir)
    except OdmaugError as err:
        return str(err)
    return None


def check_images(table: ImageTable) -> None:
    """Raise unless every row of ``table`` names an image that can be read.

    Raises:
        OdmaugError: one line: the first problem (in row order), its split, and how many of the
            table's images have one.
    """
    paths = table.frame["path"].tolist()
    files = [p for p in dict.fromkeys(paths) if not p.startswith((RETINAMNIST_SCHEME, SYNTHETIC_SCHEME))]
    with ThreadPoolExecutor(min(THREADS, max(1, len(files)))) as pool:
        found = dict(zip(files, pool.map(file_problem, files)))
    problems = []
    for row, path in enumerate(paths):
        problem = _ref_problem(path, table.data_dir) if path.startswith(RETINAMNIST_SCHEME) else found.get(path)
        if problem is not None:
            problems.append((row, problem))
    if not problems:
        return
    row, first = problems[0]
    split = table.frame.at[row, "split"]
    raise OdmaugError(f"{first} (split '{split}'; {len(problems)} of the {len(paths)} images of {table.name} "
                      "missing or unreadable, found before any work started)")


def check_refs(refs: list[str], data_dir: Optional[str] = None, option: str = "--image") -> None:
    """Raise for the first of ``refs`` (files or ``retinamnist://`` references given on the command
    line) that names no readable image, before any of them is used.

    Raises:
        OdmaugError: ``<option> <problem>``.
    """
    for ref in refs:
        problem = (_ref_problem(ref, data_dir) if ref.startswith(RETINAMNIST_SCHEME)
                   else None if ref.startswith(SYNTHETIC_SCHEME) else file_problem(ref))
        if problem is not None:
            raise OdmaugError(f"{option}: {problem}")
