"""Photographs decode as displayed: the EXIF Orientation tag (python-pillow/Pillow issue 1188).

The expected arrays follow the tag's definition in the EXIF 2.32 standard (CIPA DC-008, tag 0x0112:
where the stored 0th row and 0th column go), written with numpy, not with Pillow's transpose:
2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose (mirror along the main
diagonal), 6 rotate 90 degrees clockwise, 7 transverse (mirror along the anti-diagonal), 8 rotate
90 degrees counter-clockwise. 5-8 swap height and width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odmaug.data import decode_cache as cache
from odmaug.data.table import read_image

ORIENTATION = 0x0112

DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, k=-1),  # numpy's k > 0 turns counter-clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, k=1),
}


def stored(height: int = 4, width: int = 6) -> np.ndarray:
    """uint8 [H, W, 3] with every pixel distinct, so any mirror or turn changes the array."""
    values = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    return values * 3  # 72 values, all distinct below 256


def save(path: Path, array: np.ndarray, orientation: int, **options) -> str:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(array).save(path, exif=exif, **options)
    return str(path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_decodes_as_displayed(tmp_path, orientation):
    array = stored()
    decoded = read_image(save(tmp_path / "eye.png", array, orientation))
    expected = DISPLAYED[orientation](array)
    assert decoded.shape == ((6, 4, 3) if orientation >= 5 else (4, 6, 3))
    assert np.array_equal(decoded, expected)


def test_a_mirrored_photo_keeps_left_and_right(tmp_path):
    # A bright spot on the stored left: tag 2 (mirrored) shows it on the right, as a viewer does.
    array = np.zeros((8, 10, 3), dtype=np.uint8)
    array[:, :3] = 200
    decoded = read_image(save(tmp_path / "left.png", array, 2))
    assert decoded[:, 7:].min() == 200 and decoded[:, :7].max() == 0


def test_jpeg_rotate_90_decodes_upright(tmp_path):
    # The case: stored 60 wide x 40 high, tagged "rotate 90 clockwise": shown 40 wide x 60 high.
    yy, xx = np.mgrid[:40, :60]
    array = np.stack([xx * 4, yy * 6, np.full_like(xx, 128)], axis=2).astype(np.uint8)  # smooth: little JPEG loss
    decoded = read_image(save(tmp_path / "phone.jpg", array, 6, quality=95))
    assert decoded.shape == (60, 40, 3)
    error = np.abs(decoded.astype(int) - np.rot90(array, k=-1).astype(int))
    assert error.max() <= 6, error.max()  # JPEG loss only; a wrong turn errs by up to 236


def test_sixteen_bit_greyscale_is_turned_too(tmp_path):
    wide = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)  # 0..55000 of 65535
    path = tmp_path / "grey16.png"
    exif = Image.Exif()
    exif[ORIENTATION] = 8
    Image.fromarray(wide).save(path, exif=exif)
    decoded = read_image(str(path))  # 16-bit levels are kept (issue 29), one gray channel
    assert decoded.shape == (4, 3, 1) and decoded.dtype == np.uint16
    assert np.array_equal(decoded[..., 0], np.rot90(wide, k=1))


def test_decode_cache_entries_from_before_the_fix_miss(tmp_path, monkeypatch):
    # Entries written by PREP_VERSION 1 held unrotated pixels: today's key must not find them.
    path = save(tmp_path / "eye.png", stored(), 6)
    now = cache.entry_path(tmp_path, path, "fundus", None, 64)
    monkeypatch.setattr(cache, "PREP_VERSION", 1)
    assert cache.entry_path(tmp_path, path, "fundus", None, 64) != now
