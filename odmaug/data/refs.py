"""RetinaMNIST image references (``retinamnist://<split>/<i>``) read strictly: a reference that names
no image is one error line, never an ``IndexError``.

Python indexing once read ``retinamnist://train/-1`` as the last training image (1079) without a
word, and ``retinamnist://train/99999`` ended in a traceback; here an index is a plain decimal in
``0..n-1`` of its split, and the message says how large the split is. Each function takes the
reference's body (the text after the scheme), so :func:`odmaug.data.table.read_image` keeps its schemes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from odmaug.data import retinamnist
from odmaug.errors import OdmaugError

_INDEX = re.compile(r"^(0|[1-9]\d*)$")  # no sign, no spaces: "-1" and "+3" are not indices


def retinamnist_index(body: str, data_dir: str | Path | None = None) -> tuple[str, int, int]:
    """``(split, index, images in the split)`` of the reference ``retinamnist://<body>``.

    Raises:
        OdmaugError: not ``<split>/<index>``, an unknown split, or an index outside ``0..n-1``.
    """
    ref = f"retinamnist://{body}"
    split, sep, index = body.partition("/")
    if not sep or split not in retinamnist.SPLITS or not _INDEX.match(index):
        raise OdmaugError(f"{ref}: not a RetinaMNIST image reference (expected retinamnist://<train|val|test>/<index>)")
    size = len(retinamnist.load_split(split, data_dir)[1])
    if int(index) >= size:
        raise OdmaugError(f"{ref}: index {index} is outside 0..{size - 1} (RetinaMNIST's {split} split has "
                          f"{size} images)")
    return split, int(index), size


def retinamnist_image(body: str, data_dir: str | Path | None = None) -> np.ndarray:
    """The image ``retinamnist://<body>``, uint8 RGB [28, 28, 3]."""
    split, index, _ = retinamnist_index(body, data_dir)
    return retinamnist.load_split(split, data_dir)[0][index]

