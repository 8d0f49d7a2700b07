"""Image preparation: crop, resize, tensors, scaling, and a torch Dataset over an ImageTable."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from odmaug.data.cache import entry_path, load_entry, store_entry
from odmaug.data.table import SCHEMES, ImageTable

# ImageNet statistics: timm models expect inputs normalised with them.
CLASSIFIER_MEAN = (0.485, 0.456, 0.406)
CLASSIFIER_STD = (0.229, 0.224, 0.225)


def prepare(image: np.ndarray, size: int, crop_box: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
    """Crop (left, top, right, bottom) then resize to ``size`` x ``size``; uint8 RGB [size, size, 3]."""
    pil = Image.fromarray(image)
    if crop_box is not None:
        pil = pil.crop(tuple(crop_box))
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(pil.convert("RGB"))


def prepared(
    table: ImageTable, index: int, size: int, crop_box: Optional[tuple[int, int, int, int]] = None
) -> np.ndarray:
    """Row ``index`` of ``table`` read (with the table's crop), cropped to ``crop_box`` and resized:
    uint8 RGB [size, size, 3].

    File rows go through the table's decode cache (:mod:`odmaug.data.cache`) when it has one: the
    first call decodes and stores, later calls (any stage, any process) load the stored array.

    Raises:
        OdmaugError: a missing or corrupt image file (the message names it).
    """
    ref = str(table.frame.at[index, "path"])
    if table.cache_dir is None or ref.startswith(SCHEMES):
        return prepare(table.read(index), size, crop_box)  # in-memory sources: nothing to save
    entry = entry_path(table.cache_dir, ref, table.crop_of(index), crop_box, size)
    image = load_entry(entry, size)
    if image is None:
        image = prepare(table.read(index), size, crop_box)
        store_entry(entry, image)
    return image


def load_uint8(
    table: ImageTable,
    size: int,
    crop_box: Optional[tuple[int, int, int, int]] = None,
    progress: bool = False,
) -> torch.Tensor:
    """All images of ``table`` prepared and stacked: uint8 [N, 3, size, size].

    Small datasets (RetinaMNIST, the paper's 64 px sets) fit in memory this way, which keeps
    data loading out of the training loop entirely.
    """
    out = np.empty((len(table), size, size, 3), dtype=np.uint8)
    indices = range(len(table))
    if progress and len(table) > 500:
        from rich.progress import track

        indices = track(indices, description=f"loading {table.name}", transient=True)
    for i in indices:
        out[i] = prepared(table, i, size, crop_box)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [.., 3, H, W] -> float in [-1, 1] (the generator's scale)."""
    return images_uint8.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8, same shape."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


class GradeDataset(Dataset):
    """Prepared images of an :class:`ImageTable` as (uint8 tensor [3, H, W], grade) pairs.

    Images are decoded lazily and, with ``cache=True``, kept in memory after the first read, so a
    DataLoader with workers decodes large sets in parallel and small sets only once; the table's
    decode cache on disk (:func:`prepared`) applies either way.
    """

    def __init__(
        self,
        table: ImageTable,
        size: int,
        crop_box: Optional[tuple[int, int, int, int]] = None,
        transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        cache: bool = True,
    ) -> None:
        self.table = table
        self.size = size
        self.crop_box = crop_box
        self.transform = transform
        self._labels = torch.from_numpy(table.labels.copy())
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.table)

    def image(self, index: int) -> torch.Tensor:
        """Prepared uint8 image [3, H, W] before any transform."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        array = prepared(self.table, index, self.size, self.crop_box)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        if self._cache is not None:
            self._cache[index] = tensor
        return tensor

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self._labels[index]
