"""Image preparation: crop, resize, tensors, scaling, and a torch Dataset over an ImageTable."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from odmaug.data.decode_cache import entry_path, load_entry, pixel_key, store_entry
from odmaug.data.pixels import peak
from odmaug.data.schemes import SCHEMES
from odmaug.data.table import ImageTable

# ImageNet statistics: timm models expect inputs normalised with them.
CLASSIFIER_MEAN = (0.485, 0.456, 0.406)
CLASSIFIER_STD = (0.229, 0.224, 0.225)


def classifier_norm(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel for classifier inputs: ImageNet's for RGB; for grayscale their
    averages (0.449, 0.226), matching timm's 1-channel adaptation of RGB weights (filters summed)."""
    if channels == 3:
        return CLASSIFIER_MEAN, CLASSIFIER_STD
    return (round(sum(CLASSIFIER_MEAN) / 3, 3),), (round(sum(CLASSIFIER_STD) / 3, 3),)


def prepare(image: np.ndarray, size: int, crop_box: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
    """Crop (left, top, right, bottom) then resize to ``size`` x ``size`` (bicubic, Pillow).

    Args:
        image: uint8 or uint16 [H, W, C], C = 1 or 3 (a 2-D array counts as C = 1).

    Returns:
        [size, size, C] of the input's dtype. uint8 RGB and gray are resized by Pillow as they are;
        uint16 channels are resized as float32 (Pillow mode F) and rounded back, so 16-bit levels
        are neither clipped nor reduced to 256.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype == np.uint8 and image.shape[2] == 3:
        return np.asarray(_resized(Image.fromarray(image), size, crop_box).convert("RGB"))
    if image.dtype == np.uint8:
        return np.asarray(_resized(Image.fromarray(image[:, :, 0], "L"), size, crop_box))[:, :, None]
    planes = [np.asarray(_resized(Image.fromarray(image[:, :, c].astype(np.float32), "F"), size, crop_box))
              for c in range(image.shape[2])]
    return np.clip(np.rint(np.stack(planes, axis=2)), 0, 65535).astype(np.uint16)


def _resized(pil: Image.Image, size: int, crop_box) -> Image.Image:
    if crop_box is not None:
        pil = pil.crop(tuple(crop_box))
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BICUBIC)
    return pil


def prepared(
    table: ImageTable, index: int, size: int, crop_box: Optional[tuple[int, int, int, int]] = None
) -> np.ndarray:
    """Row ``index`` of ``table`` read (with the table's crop), cropped to ``crop_box`` and resized:
    [size, size, C] in the table's pixel format (uint8 RGB [size, size, 3] for colour sets).

    File rows go through the table's decode cache (:mod:`odmaug.data.decode_cache`) when it has one: the
    first call decodes and stores, later calls (any stage, any process) load the stored array.

    Raises:
        OdmaugError: a missing or corrupt image file (the message names it).
    """
    ref = str(table.frame.at[index, "path"])
    if table.cache_dir is None or ref.startswith(SCHEMES):
        return prepare(table.read(index), size, crop_box)  # in-memory sources: nothing to save
    fmt = table.pixel_format()
    entry = entry_path(table.cache_dir, ref, table.crop_of(index), crop_box, size, pixel_key(table))
    image = load_entry(entry, size, fmt)
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
    """All images of ``table`` prepared and stacked: [N, C, size, size] in the table's pixel format
    (uint8, or uint16 for 16-bit sets; C = 1 or 3).

    Small datasets (RetinaMNIST, the paper's 64 px sets) fit in memory this way, which keeps
    data loading out of the training loop entirely.
    """
    fmt = table.pixel_format()
    out = np.empty((len(table), size, size, fmt.channels), dtype=fmt.dtype)
    indices = range(len(table))
    if progress and len(table) > 500:
        from rich.progress import track

        indices = track(indices, description=f"loading {table.name}", transient=True)
    for i in indices:
        out[i] = prepared(table, i, size, crop_box)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255) or uint16 (0..65535) [.., C, H, W] -> float in [-1, 1] (the generator's scale)."""
    if images_uint8.dtype == torch.uint8:
        return images_uint8.float().div(127.5).sub(1.0)
    return images_uint8.float().div(peak(images_uint8.dtype) / 2).sub(1.0)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 or uint16 [..] -> float in [0, 1] (the classifiers' scale, before normalisation)."""
    return images.float().div(peak(images.dtype))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8, same shape."""
    return images.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as they are; uint16 rounded to 8 bits (v / 257), e.g. to sit beside generated ones in a figure."""
    if images.dtype == torch.uint8:
        return images
    return images.float().div(257.0).round().clamp(0, 255).to(torch.uint8)


def to_pixels(images: torch.Tensor, bits: int) -> torch.Tensor:
    """float in [-1, 1] -> uint8 (``bits`` 8, as :func:`to_uint8`) or uint16 (16), same shape."""
    if bits == 8:
        return to_uint8(images)
    return images.float().add(1.0).mul(32767.5).round().clamp(0, 65535).to(torch.uint16)


class GradeDataset(Dataset):
    """Prepared images of an :class:`ImageTable` as (tensor [C, H, W] in its pixel format, grade) pairs.

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
        """Prepared image [C, H, W] (uint8, or uint16 for 16-bit sets) before any transform."""
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
