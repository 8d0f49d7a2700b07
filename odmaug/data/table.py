"""The one dataset interface: a table of image references with grades, splits and groups.

Every source (RetinaMNIST, an image folder, a CSV manifest, the synthetic set, synthetic images
from a generator) becomes an :class:`ImageTable`: a pandas DataFrame with the columns

    path    image reference: a file path, or ``retinamnist://<split>/<i>``,
            ``synthetic://<size>/<seed>/<i>/<grade>`` for images that live in memory
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
from PIL import Image, ImageOps, UnidentifiedImageError

from odmaug.atomic import atomic_path
from odmaug.data import retinamnist
from odmaug.data.crops import crop_image
from odmaug.data.synthetic import draw_fundus
from odmaug.errors import OdmaugError

COLUMNS = ["path", "label", "split", "group", "source"]
RETINAMNIST_SCHEME = "retinamnist://"
SYNTHETIC_SCHEME = "synthetic://"
SCHEMES = (RETINAMNIST_SCHEME, SYNTHETIC_SCHEME)


def read_image(ref: str, data_dir: str | Path | None = None, num_classes: int = 5) -> np.ndarray:
    """Load one image reference as uint8 RGB [H, W, 3]; a corrupt file names itself in the error."""
    if ref.startswith(RETINAMNIST_SCHEME):
        split, index = ref[len(RETINAMNIST_SCHEME):].split("/")
        images, _ = retinamnist.load_split(split, data_dir)
        return images[int(index)]
    if ref.startswith(SYNTHETIC_SCHEME):
        size, seed, index, grade = (int(p) for p in ref[len(SYNTHETIC_SCHEME):].split("/"))
        return draw_fundus(grade, num_classes, size, seed, index)
    return decode_image_file(ref)


def decode_image_file(path: str | Path) -> np.ndarray:
    """One image file as uint8 RGB [H, W, 3] as displayed, 16-bit greyscale scaled by its real range.

    "As displayed": an EXIF Orientation tag (2-8: mirrored and/or rotated by 90, 180 or 270
    degrees) is applied, as viewers do, so a phone or camera photograph stored sideways decodes
    upright and a mirrored one does not swap left and right eyes (Pillow leaves the tag to the
    caller, python-pillow/Pillow issue 1188). Changing this changes the pixels: bump
    :data:`odmaug.data.cache.PREP_VERSION` with it.

    Raises:
        OdmaugError: the file is missing, or corrupt, unreadable or a decompression bomb (more
            pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` allows twice over); the message names it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # in place: no 30 MB copy of an upright photo
            return _to_rgb_uint8(img)
    except FileNotFoundError:
        raise OdmaugError(f"image not found: {path}") from None
    except Image.DecompressionBombError as err:
        # PIL refuses before decoding; decoding would take gigabytes, so it is a bad file for us too.
        raise OdmaugError(f"corrupt or unreadable image: {path} (too many pixels: {err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise OdmaugError(f"corrupt or unreadable image: {path} ({err})") from None


# 16-bit greyscale PNGs open in these modes; PIL's convert("RGB") clips them at 255 instead of scaling.
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """A loaded PIL image as uint8 RGB [H, W, 3]; 16-bit values 0..65535 map to 0..255 (v / 257)."""
    if img.mode not in _SIXTEEN_BIT_MODES:
        return np.asarray(img.convert("RGB"))
    wide = np.asarray(img).astype(np.float64)  # [H, W]; mode 'I' is 32-bit, clipped to 16-bit range
    grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


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
        cache_dir: folder of the decode cache (:mod:`odmaug.data.cache`) that stages loading
            prepared images use for file rows; None: no cache.
    """

    frame: pd.DataFrame
    num_classes: int
    name: str = "dataset"
    data_dir: str | None = None
    crop: str = "none"
    cache_dir: str | None = None

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
        rows = self.frame[self.frame["split"].isin(names)]
        return ImageTable(rows, self.num_classes, f"{self.name}/{'+'.join(names)}", self.data_dir,
                          self.crop, self.cache_dir)

    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted(self.frame["split"].unique(), key=lambda s: (order.get(s, 9), s))

    def counts(self) -> np.ndarray:
        """Images per grade, [C]."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def read(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 RGB [H, W, 3], cropped by :meth:`crop_of` (square unless none)."""
        image = read_image(self.frame.at[index, "path"], self.data_dir, self.num_classes)
        return crop_image(image, self.crop_of(index))

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
