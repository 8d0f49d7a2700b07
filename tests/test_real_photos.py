"""Real photographs: patient groups from file names, fundus and centre crops, the decode cache,
and the warnings a small or non-square set of real images gets."""

from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.config import DataConfig, load_recipe
from odmaug.data import GradeDataset, load_table, load_uint8, table_from_spec
from odmaug import console
from odmaug.data import checks, table as table_module
from odmaug.data.crops import crop_image, fundus_box
from odmaug.data.table import read_image
from odmaug.errors import OdmaugError

PATTERN = r"^(Patient\d+)_"


def jpeg(path: Path, width: int = 48, height: int = 32, seed: int = 0) -> None:
    """A small textured non-square JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(40, 220, (height, width, 3), dtype=np.uint8)).save(path, quality=90)


@pytest.fixture
def patients(tmp_path) -> Path:
    """36 patients, 3 grades: most with two eyes (every sixth with a worse right eye), some with one."""
    root = tmp_path / "photos"
    for p in range(36):
        grade = p % 3
        eyes = {"left": grade} if p % 5 == 4 else {"left": grade, "right": min(grade + (p % 6 == 0), 2)}
        for eye, g in eyes.items():
            jpeg(root / str(g) / f"Patient{p:03d}_{eye}.jpg", seed=p * 2 + (eye == "right"))
    return root


def folder_cfg(root: Path, **extra) -> DataConfig:
    return DataConfig(source="folder", path=str(root), num_classes=3, **extra)


@pytest.fixture
def said(monkeypatch) -> list[str]:
    """Warning lines from the data checks (outside a CLI command each call warns)."""
    lines: list[str] = []
    monkeypatch.setattr(console, "warn", lines.append)  # warn_once prints through it
    return lines


# --- patients -----------------------------------------------------------------------------------


def test_group_pattern_keeps_each_patient_in_one_split(patients, said):
    table = load_table(folder_cfg(patients, group_pattern=PATTERN))
    frame = table.frame
    assert frame["group"].str.fullmatch(r"Patient\d{3}").all()
    assert (frame.groupby("group")["split"].nunique() == 1).all()
    assert set(frame["split"]) == {"train", "val", "test"}
    assert not any("no patient groups" in line for line in said)


def test_group_pattern_errors(patients):
    jpeg(patients / "1" / "stray.jpg")
    with pytest.raises(OdmaugError, match=r"does not match the file name of .*stray\.jpg"):
        load_table(folder_cfg(patients, group_pattern=PATTERN))
    with pytest.raises(ValueError, match="exactly one capture group"):
        folder_cfg(patients, group_pattern=r"^Patient\d+_")
    with pytest.raises(ValueError, match="not a regular expression"):
        folder_cfg(patients, group_pattern=r"^(Patient")
    with pytest.raises(ValueError, match="alternatives"):
        folder_cfg(patients, crop="fundus", crop_box=(0, 0, 8, 8))


# --- crops --------------------------------------------------------------------------------------


def disc_photo(path: Path, height: int, width: int, cx: int, cy: int, r: int) -> None:
    """A vignetted orange disc on a noisy black canvas, saved as a JPEG (so with its artefacts)."""
    yy, xx = np.mgrid[:height, :width]
    d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
    shade = np.where(d2 <= 1, 1 - 0.5 * d2, 0)[..., None]  # the rim is half as bright as the centre
    noise = np.random.default_rng(0).integers(0, 8, (height, width, 3))
    image = np.clip(shade * np.array([200, 120, 60]) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path, quality=85)


def test_fundus_crop_finds_the_disc_within_two_pixels(tmp_path):
    disc_photo(tmp_path / "eye.jpg", 200, 300, cx=110, cy=90, r=60)  # off centre on a wide canvas
    image = read_image(str(tmp_path / "eye.jpg"))
    assert np.abs(np.array(fundus_box(image)) - [50, 30, 171, 151]).max() <= 2
    cropped = crop_image(image, "fundus")
    assert cropped.shape[0] == cropped.shape[1] and abs(cropped.shape[0] - 121) <= 2
    # A disc cut at top and bottom (common in EyePACS): full height, padded to a square with black.
    disc_photo(tmp_path / "cut.jpg", 200, 300, cx=150, cy=100, r=120)
    cut = read_image(str(tmp_path / "cut.jpg"))
    assert np.abs(np.array(fundus_box(cut)) - [30, 0, 271, 200]).max() <= 2
    padded = crop_image(cut, "fundus")
    assert padded.shape[:2] == (padded.shape[1], padded.shape[1]) and padded[:10].max() == 0


def test_centre_crop_and_the_table_crop(patients, said):
    table = load_table(folder_cfg(patients, crop="centre", group_pattern=PATTERN))
    whole = read_image(table.paths[0])  # 32 x 48
    assert np.array_equal(table.read(0), whole[:, 8:40])
    assert not any("square" in line for line in said)  # a crop is set: nothing is squashed
    table.frame.loc[0, "source"] = "synthetic"  # generated images were made from cropped ones
    assert table.read(0).shape == (32, 48, 3)


# --- decode cache -------------------------------------------------------------------------------


def test_second_load_decodes_nothing(patients, tmp_path, monkeypatch):
    decodes: list[str] = []
    real_decode = table_module.decode_image_file
    monkeypatch.setattr(table_module, "decode_image_file", lambda p: decodes.append(p) or real_decode(p))
    cfg = folder_cfg(patients, crop="fundus", group_pattern=PATTERN, cache_dir=str(tmp_path / "cache"))
    train = load_table(cfg).split("train")
    first = load_uint8(train, 16)
    entries = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(decodes) == len(train) and len(entries) == len(train)
    decodes.clear()
    again = load_table(cfg).split("train")  # another stage (or process) loading the same data
    assert torch_equal(load_uint8(again, 16), first) and decodes == []
    assert GradeDataset(again, 16)[3][0].shape == (3, 16, 16) and decodes == []
    entries[0].write_bytes(b"damaged")  # an unreadable entry is a miss, and is rewritten
    assert torch_equal(load_uint8(again, 16), first) and len(decodes) == 1
    decodes.clear()
    assert torch_equal(load_uint8(again, 16), first) and decodes == []
    load_uint8(again, 24)  # another size is another entry
    assert len(decodes) == len(train)
    off = load_table(cfg.model_copy(update={"cache": False, "cache_dir": str(tmp_path / "none")}))
    load_uint8(off.split("val"), 16)
    assert not (tmp_path / "none").exists()


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


# --- warnings -----------------------------------------------------------------------------------


def test_warnings_no_groups_shapes_and_small_splits(patients, said):
    load_table(folder_cfg(patients))
    assert any("no patient groups" in line and "straddle" in line for line in said)
    assert any("images are 48x32 (all 65), squashed to a square" in line for line in said)
    small = [line for line in said if "split 'val' has under 10 images of" in line]
    assert len(small) == 1 and re.search(r"grade 0 \(\d\)", small[0]) and "min_split_images" in small[0], small
    said.clear()
    load_table(folder_cfg(patients, group_pattern=PATTERN, min_split_images=0))
    assert not any("no patient groups" in line or "has under" in line for line in said)
    jpeg(patients / "2" / "Patient999_left.jpg", width=32, height=32)
    load_table(folder_cfg(patients, group_pattern=PATTERN))
    assert any("aspect ratios vary from 32x32 (Patient999_left.jpg) to 48x32" in line for line in said)


def test_warn_once_per_command(said):
    with click.Context(click.Command("x")):
        checks.warn_once("a")
        checks.warn_once("a")
    checks.warn_once("a")  # outside a command: nothing to scope it to, so it warns
    assert said == ["a", "a"]


# --- the CLI ------------------------------------------------------------------------------------


def test_data_info_on_a_folder_and_a_manifest_shows_the_recipe_split(patients, tmp_path):
    sets = ["--set", "data.num_classes=3", "--set", f"data.group_pattern={PATTERN}"]
    result = CliRunner().invoke(app, ["data", "info", "--source", str(patients), *sets])
    assert result.exit_code == 0, result.output
    expected = load_table(load_recipe(None, ["data.num_classes=3", f"data.group_pattern={PATTERN}",
                                             "data.source=folder", f"data.path={patients}"]).data)
    for split in ("train", "val", "test"):
        cells = next(line for line in result.stdout.splitlines() if line.startswith(f"│ {split} "))
        cells = [c.strip() for c in cells.strip("│").split("│")]
        part = expected.split(split)
        assert cells[1:4] == [str(c) for c in part.counts()], cells
        assert cells[-1] == str(part.frame["group"].nunique())
    assert "splits grouped by patient" in result.stdout and "none in two splits" in result.stdout

    manifest = tmp_path / "m.csv"
    frame = table_from_spec(str(patients), DataConfig(num_classes=3)).frame
    frame[["path", "label"]].to_csv(manifest, index=False)  # no split column
    result = CliRunner().invoke(app, ["data", "info", "--source", f"{manifest}:test", *sets])
    assert result.exit_code == 0, result.output
    assert "│ test " in result.stdout and "│ train " not in result.stdout
