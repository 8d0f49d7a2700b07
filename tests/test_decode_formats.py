"""Every format Pillow reads, at its own depth; transparency on black; float images by their range.

Table-driven: each case writes a file with Pillow and states what the decoder must return,
computed here from the array that was written (not from odmaug's own conversions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odmaug.config import DataConfig
from odmaug.data import load_table, load_uint8
from odmaug.data.decode import decode_image_file
from odmaug.data.pixels import PixelFormat, convert
from odmaug.data.sources import folder_table
from odmaug.errors import OdmaugError

RNG = np.random.default_rng(29)
RGB = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
WIDE = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)
ALPHA = np.where(np.arange(10)[None, :] < 5, 0, 255).astype(np.uint8).repeat(12, 0)  # left half transparent


def _rgba(path: Path) -> None:
    white_under = RGB.copy()
    white_under[ALPHA == 0] = 255  # what editors store under transparent pixels (once decoded as white)
    Image.fromarray(np.dstack([white_under, ALPHA]), "RGBA").save(path)


def _palette_with_transparency(path: Path) -> None:
    img = Image.fromarray(GRAY, "L").convert("P")
    img.info["transparency"] = int(np.asarray(img)[0, 0])  # palette index of the first pixel
    img.save(path, transparency=int(np.asarray(img)[0, 0]))


def _expected_rgba() -> np.ndarray:
    out = RGB.copy()
    out[ALPHA == 0] = 0  # composited on black
    return out


CASES = {
    # name: (writer, expected array [H, W, C], dtype)
    "rgb.png": (lambda p: Image.fromarray(RGB).save(p), lambda: RGB),
    "rgb.bmp": (lambda p: Image.fromarray(RGB).save(p), lambda: RGB),
    "rgb.tif": (lambda p: Image.fromarray(RGB).save(p), lambda: RGB),
    "rgb.tiff": (lambda p: Image.fromarray(RGB).save(p, compression="tiff_lzw"), lambda: RGB),
    "rgb.webp": (lambda p: Image.fromarray(RGB).save(p, lossless=True), lambda: RGB),
    "gray.png": (lambda p: Image.fromarray(GRAY, "L").save(p), lambda: GRAY[:, :, None]),
    "gray.bmp": (lambda p: Image.fromarray(GRAY, "L").save(p), lambda: GRAY[:, :, None]),
    "gray16.png": (lambda p: Image.fromarray(WIDE).save(p), lambda: WIDE[:, :, None]),
    "gray16.tif": (lambda p: Image.fromarray(WIDE).save(p), lambda: WIDE[:, :, None]),
    "float01.tif": (lambda p: Image.fromarray((WIDE / 65535.0).astype(np.float32), "F").save(p),
                    lambda: np.rint(WIDE.astype(np.float32) / 65535.0 * 65535).astype(np.uint16)[:, :, None]),
    "float_hu.tif": (lambda p: Image.fromarray((WIDE.astype(np.float32) - 1024) * 0.5, "F").save(p),
                     lambda: np.rint((WIDE - float(WIDE.min())) / float(WIDE.max() - WIDE.min()) * 65535)
                     .astype(np.uint16)[:, :, None]),
    "rgba.png": (_rgba, _expected_rgba),
    "la.png": (lambda p: Image.fromarray(np.dstack([GRAY, ALPHA]), "LA").save(p),
               lambda: np.where(ALPHA == 0, 0, GRAY).astype(np.uint8)[:, :, None]),
    "palette_transparent.png": (_palette_with_transparency,
                                lambda: np.where(GRAY == GRAY[0, 0], 0, GRAY).astype(np.uint8)[:, :, None].repeat(3, 2)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_format_decodes_to_the_written_pixels(tmp_path, name):
    write, expected = CASES[name]
    path = tmp_path / name
    write(path)
    got = decode_image_file(path)
    want = expected()
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape)
    tolerance = 1 if name.startswith("float") else 0  # float32 holds 16-bit levels to within rounding
    assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= tolerance


def test_float_images_with_nan_are_refused_naming_the_file(tmp_path):
    values = np.zeros((4, 4), np.float32)
    values[1, 1] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "nan.tif")
    with pytest.raises(OdmaugError, match=r"nan\.tif .*NaN"):
        decode_image_file(tmp_path / "nan.tif")


def test_a_folder_counts_every_format_and_warns_about_the_rest(tmp_path, capsys):
    for grade, names in enumerate([["a.png", "b.jpg", "c.jpeg", "d.tif"], ["e.tiff", "f.bmp", "g.webp", "h.PNG"]]):
        for name in names:
            (tmp_path / str(grade)).mkdir(exist_ok=True)
            Image.fromarray(RGB).save(tmp_path / str(grade) / name, format=Image.registered_extensions()[
                Path(name).suffix.lower()])
    (tmp_path / "0" / "notes.txt").write_text("not an image")
    (tmp_path / "1" / "labels.csv").write_text("x")
    (tmp_path / "1" / ".DS_Store").write_text("hidden")
    frame = folder_table(tmp_path, 2)
    assert len(frame) == 8  # 5 of 8 were counted before (only png, jpg, jpeg)
    assert "2 file(s) that are not images were left out (1 .csv, 1 .txt)" in capsys.readouterr().err


def test_a_gray_set_is_one_channel_and_a_mixed_set_is_colour(tmp_path):
    for grade in range(2):
        (tmp_path / "gray" / str(grade)).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(GRAY, "L").save(tmp_path / "gray" / str(grade) / f"{i}.png")
    cfg = DataConfig(source="folder", path=str(tmp_path / "gray"), num_classes=2, image_size=8, cache=False,
                     val_fraction=0.0, test_fraction=0.0, min_split_images=0)
    gray = load_table(cfg)
    assert gray.pixel_format() == PixelFormat(1, 8) and load_uint8(gray, 8).shape == (4, 1, 8, 8)
    assert load_table(cfg.model_copy(update={"channels": 3})).pixel_format() == PixelFormat(3, 8)
    Image.fromarray(RGB).save(tmp_path / "gray" / "1" / "colour.jpg")
    assert load_table(cfg).pixel_format() == PixelFormat(3, 8)  # one colour image makes the set colour


def test_sixteen_bit_levels_are_kept_for_both_channel_settings(tmp_path):
    for grade in range(2):
        (tmp_path / str(grade)).mkdir()
        Image.fromarray(WIDE).save(tmp_path / str(grade) / "x.png")
    cfg = DataConfig(source="folder", path=str(tmp_path), num_classes=2, image_size=10, cache=False,
                     val_fraction=0.0, test_fraction=0.0, min_split_images=0, crop="none")
    for channels in (1, 3):
        images = load_uint8(load_table(cfg.model_copy(update={"channels": channels})), 12)
        assert images.dtype == torch.uint16 and images.shape[1] == channels
        # 12 x 10 squashed to 12 x 12 by Pillow's bicubic on float32: compare with Pillow itself
        want = np.asarray(Image.fromarray(WIDE.astype(np.float32), "F").resize((12, 12), Image.Resampling.BICUBIC))
        assert np.abs(images[0, 0].numpy().astype(np.float64) - np.clip(np.rint(want), 0, 65535)).max() == 0


@pytest.mark.parametrize("bits", [8, 16])
def test_rgb_to_gray_is_pillows_luma(bits):
    if bits == 8:
        assert np.array_equal(convert(RGB, PixelFormat(1, 8))[:, :, 0], np.asarray(Image.fromarray(RGB).convert("L")))
    else:
        wide = RGB.astype(np.uint16) * 257
        luma = np.asarray(Image.fromarray(RGB).convert("L")).astype(np.int64) * 257
        assert np.abs(convert(wide, PixelFormat(1, 16))[:, :, 0].astype(np.int64) - luma).max() <= 257


def test_the_decode_cache_keys_the_pixel_format(tmp_path):
    from odmaug.data import decode_cache as cache
    from odmaug.data.images import prepared

    for grade in range(2):
        (tmp_path / "set" / str(grade)).mkdir(parents=True)
        Image.fromarray(WIDE).save(tmp_path / "set" / str(grade) / "x.png")
    cfg = DataConfig(source="folder", path=str(tmp_path / "set"), num_classes=2, image_size=8, cache=True,
                     cache_dir=str(tmp_path / "cache"), val_fraction=0.0, test_fraction=0.0, min_split_images=0)
    shapes = set()
    for channels in (1, 3):
        table = load_table(cfg.model_copy(update={"channels": channels}))
        first = prepared(table, 0, 8)  # decoded and stored
        again = prepared(table, 0, 8)  # loaded from the entry
        assert np.array_equal(first, again) and first.dtype == np.uint16
        shapes.add(first.shape)
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    assert shapes == {(8, 8, 1), (8, 8, 3)} and len(entries) == 2  # one image in two formats: two entries
    assert {np.load(e).shape for e in entries} == shapes
    assert cache.prep_identity(cache.pixel_key(table))["pixels"] == {"channels": 3, "bits": 16, "window": None}
