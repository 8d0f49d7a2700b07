"""The one dataset interface: a table of image references with grades, splits and groups.

Every source (RetinaMNIST, an image folder, a CSV manifest, the synthetic set, synthetic images
from a generator) becomes an :class:`ImageTable`: a pandas DataFrame with the columns

    path    image reference: a file path, or ``retinamnist://<split>/<i>``,
            ``synthetic://<size>/<seed>/<i>/<grade>`` (``synthetic://radiograph/...`` for the
            grayscale set) for images that live in memory
    label   integer grade 0..C-1
    split   train / val / test
    group   optional group id (a patient), kept within one split
    source  real / synthetic (/ oversampled)

File paths are absolute once loaded; manifests store them relative to the manifest's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from odmaug.atomic import atomic_path
from odmaug.data.crops import crop_image
from odmaug.data.decode import decode_image_file
from odmaug.data.dicom import decode_dicom
from odmaug.data.pixels import DICOM_SUFFIXES, PixelFormat, convert, resolve_format
from odmaug.data.radiograph import RADIOGRAPH, draw_radiograph
from odmaug.data.refs import retinamnist_image
from odmaug.data.schemes import RETINAMNIST_SCHEME, SCHEMES, SYNTHETIC_SCHEME
from odmaug.data.synthetic import draw_fundus
from odmaug.errors import OdmaugError

COLUMNS = ["path", "label", "split", "group", "source"]


def read_image(ref: str, data_dir: str | Path | None = None, num_classes: int = 5,
               window: tuple[float, float] | None = None) -> np.ndarray:
    """Load one image reference as it is stored: uint8 or uint16 [H, W, 1 or 3] (see
    :mod:`odmaug.data.decode`; ``.dcm`` files: :mod:`odmaug.data.dicom` with ``window``); a corrupt
    file names itself in the error. :meth:`ImageTable.read` brings it to the table's format."""
    if ref.startswith(RETINAMNIST_SCHEME):  # an index outside its split is one error line, never -1 = last
        return retinamnist_image(ref[len(RETINAMNIST_SCHEME):], data_dir)
    if ref.startswith(SYNTHETIC_SCHEME):
        parts = ref[len(SYNTHETIC_SCHEME):].split("/")
        draw = draw_fundus
        if parts[0] == RADIOGRAPH:
            parts, draw = parts[1:], draw_radiograph
        size, seed, index, grade = (int(p) for p in parts)
        return draw(grade, num_classes, size, seed, index)
    if Path(ref).suffix.lower() in DICOM_SUFFIXES:
        return decode_dicom(ref, window)
    return decode_image_file(ref)


@dataclass
class ImageTable:
    """Images with grades: the dataset interface every stage reads.

    Attributes:
        frame: DataFrame with the columns in ``COLUMNS``.
        num_classes: number of grades C (labels are 0..C-1).
        name: a short description of where the images come from.
        data_dir: folder for ``retinamnist://`` references (None: the usual lookup).
        crop: ``data.crop`` (none / centre / fundus, see :mod:`odmaug.data.crops`), applied by
            :meth:`read` to every row but generated ones (``source == "synthetic"``), which were
            made from already cropped images.
        cache_dir: folder of the decode cache (:mod:`odmaug.data.decode_cache`) that stages loading
            prepared images use for file rows; None: no cache.
        channels: 1 or 3 channels per prepared image (``data.channels``); None: auto, resolved by
            :meth:`pixel_format` from the rows (1 when every image is grayscale).
        bits: 8 or 16 bits per level; None: resolved with ``channels`` (16 when any image is deeper than 8).
        window: ``data.window`` (center, width) for DICOM rows; None: each file's own window.
    """

    frame: pd.DataFrame
    num_classes: int
    name: str = "dataset"
    data_dir: str | None = None
    crop: str = "none"
    cache_dir: str | None = None
    channels: int | None = None
    bits: int | None = None
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        frame = self.frame.copy()
        for column, default in (("split", "train"), ("group", None), ("source", "real")):
            if column not in frame.columns:
                frame[column] = default
        self.frame = frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]].reset_index(drop=True)
        self.frame["label"] = self.frame["label"].astype(np.int64)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy()

    @property
    def paths(self) -> list[str]:
        return self.frame["path"].tolist()

    def split(self, *names: str) -> "ImageTable":
        """Only the rows of the given split(s)."""
        return self.derived(self.frame[self.frame["split"].isin(names)], f"{self.name}/{'+'.join(names)}")

    def derived(self, frame: pd.DataFrame, name: str | None = None) -> "ImageTable":
        """A table of other rows (a subset, a merge) that prepares them as this one does: same
        grades, crop, cache and pixel format (see :meth:`format_fields`)."""
        return ImageTable(frame, self.num_classes, name or self.name, self.data_dir, self.crop, self.cache_dir,
                          **self.format_fields())

    def format_fields(self) -> dict:
        """``channels``, ``bits`` and ``window`` as keyword arguments for a new table of these
        images, resolved first: a subset of a gray and colour mix, or of a set whose channels were
        given, keeps the whole set's format."""
        fmt = self.pixel_format()
        return {"channels": fmt.channels, "bits": fmt.bits, "window": self.window}

    def pixel_format(self) -> PixelFormat:
        """The :class:`~odmaug.data.pixels.PixelFormat` every image of the table is prepared in;
        resolved from the rows' headers on first use when ``channels`` or ``bits`` is None."""
        if self.channels is None or self.bits is None:
            fmt = resolve_format(self.frame["path"].astype(str), self.channels)
            self.channels, self.bits = fmt.channels, (self.bits or fmt.bits)
        return PixelFormat(self.channels, self.bits)

    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted(self.frame["split"].unique(), key=lambda s: (order.get(s, 9), s))

    def counts(self) -> np.ndarray:
        """Images per grade, [C]."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` in the table's :meth:`pixel_format` ([H, W, channels], uint8 or uint16),
        cropped by :meth:`crop_of` (square unless none)."""
        image = read_image(self.frame.at[index, "path"], self.data_dir, self.num_classes, self.window)
        return crop_image(convert(image, self.pixel_format()), self.crop_of(index))

    def crop_of(self, index: int) -> str:
        """The crop :meth:`read` applies to row ``index``: ``none`` for generated rows."""
        return "none" if self.frame.at[index, "source"] == "synthetic" else self.crop

    def require_every_grade(self, what: str = "training split") -> None:
        """Raise when a grade has no images (a classifier or generator cannot learn it)."""
        missing = [str(g) for g, c in enumerate(self.counts()) if c == 0]
        if missing:
            raise OdmaugError(f"{self.name}: grade {', '.join(missing)} has no images in the {what}")


def validate_labels(values: Iterable, num_classes: int, origin: str) -> np.ndarray:
    """Grades as int64, or an error naming the first bad value and where it came from."""
    out = []
    for row, value in enumerate(values):
        try:
            number = float(value)
            if not number.is_integer():
                raise ValueError
        except (TypeError, ValueError):
            raise OdmaugError(f"{origin}: label {value!r} (row {row + 1}) is not an integer grade") from None
        if not 0 <= number < num_classes:
            raise OdmaugError(
                f"{origin}: label {int(number)} (row {row + 1}) is outside 0..{num_classes - 1}"
            )
        out.append(int(number))
    return np.asarray(out, dtype=np.int64)


def resolve_path(raw: str, base: Path, origin: str) -> str:
    """A manifest path: references pass through, relative paths must stay inside ``base``."""
    raw = str(raw).strip()
    if raw.startswith(SCHEMES):
        return raw
    path = Path(raw)
    if path.is_absolute():
        return str(path)
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise OdmaugError(f"{origin}: path '{raw}' escapes the manifest's folder {base}")
    return str(resolved)


def write_manifest(table: ImageTable | pd.DataFrame, target: str | Path) -> Path:
    """Write a manifest CSV atomically; file paths inside its folder are stored relative to it."""
    target = Path(target)
    frame = table.frame if isinstance(table, ImageTable) else table
    frame = frame.copy()
    base = target.parent.resolve()

    def rel(p: str) -> str:
        if p.startswith(SCHEMES):
            return p
        path = Path(p).resolve()
        return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    frame["path"] = frame["path"].map(rel)
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return target
