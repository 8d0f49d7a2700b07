"""odmaug.augment plan and output folder: grades, amounts, seeds, identity refusal, scans, disk space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from odmaug.augment.plan import Item, images_per_grade, parse_target_classes, requested_items, shard
from odmaug.augment.space import check_disk_space, estimate_png_bytes
from odmaug.augment.synthesis_folder import SynthesisFolder, is_valid_png
from odmaug.data.sources import read_manifest
from odmaug.errors import OdmaugError

REAL = np.array([40, 10, 6, 3, 1])


def test_parse_target_classes():
    assert parse_target_classes("auto", 5) is None
    assert parse_target_classes(" AUTO ", 5) is None
    assert parse_target_classes("4", 5) == [4]
    assert parse_target_classes("4,3,3", 5) == [3, 4]
    assert parse_target_classes(2, 5) == [2]
    assert parse_target_classes([1, 0], 5) == [0, 1]
    for bad, message in (("5", "outside the grades 0..4"), ("-1", "outside"), ("x", "not a grade"), ("", "needs a grade")):
        with pytest.raises(OdmaugError, match=message):
            parse_target_classes(bad, 5)


def test_images_per_grade():
    assert images_per_grade([4], 5, n_per_grade=7) == {4: 7}
    # auto: every grade below the majority (40); --n gives each the same number.
    assert images_per_grade(None, 5, n_per_grade=2, real_counts=REAL) == {1: 2, 2: 2, 3: 2, 4: 2}
    # Fill up to the majority, or up to --to-count counting the real images (never negative).
    assert images_per_grade(None, 5, real_counts=REAL) == {1: 30, 2: 34, 3: 37, 4: 39}
    assert images_per_grade(None, 5, to_count=8, real_counts=REAL) == {2: 2, 3: 5, 4: 7}
    assert images_per_grade([0, 4], 5, to_count=8, real_counts=REAL) == {0: 0, 4: 7}
    for kwargs, message in (
        ({"n_per_grade": 0}, "positive"),
        ({"n_per_grade": -3}, "positive"),
        ({"to_count": 0}, "positive"),
        ({"n_per_grade": 2, "to_count": 5}, "not both"),
    ):
        with pytest.raises(OdmaugError, match=message):
            images_per_grade([1], 5, real_counts=REAL, **kwargs)
    with pytest.raises(OdmaugError, match="real training counts"):
        images_per_grade(None, 5, n_per_grade=3)


def test_requested_items_and_shards():
    items = requested_items({4: 3, 1: 2}, seed_start=10)
    assert items == [Item(1, 10), Item(1, 11), Item(4, 10), Item(4, 11), Item(4, 12)]
    assert items[0].relpath == "1/10.png"
    # Shards are disjoint and cover everything, every world-th item per rank.
    parts = [shard(items, r, 2) for r in range(2)]
    assert parts[0] == items[0::2] and parts[1] == items[1::2]
    assert sorted(parts[0] + parts[1]) == items
    with pytest.raises(OdmaugError, match="seed-start"):
        requested_items({1: 1}, seed_start=-1)


def record(**changes) -> dict:
    identity = {"checkpoint_id": "abc", "num_classes": 5, "image_size": 8, "sampler": "ddim", "steps": 5,
                "eta": 0.0, "guidance_scale": 2.0, "clip_x0": True, "precision": "auto", "timestep_spacing": "trailing"}
    identity.update(changes)
    return {"format": 1, "generator_run": "00000-smoke", "identity": identity}


def write_image(folder: SynthesisFolder, item: Item, value: int = 7) -> None:
    folder.write_png(item, np.full((folder.image_size, folder.image_size, 3), value, np.uint8))


def test_folder_scan_validity_and_cleanup(tmp_path):
    folder = SynthesisFolder(tmp_path / "syn", image_size=8, num_classes=5)
    assert folder.prepare(record()) == 0
    for seed in range(3):
        write_image(folder, Item(2, seed))
    # A truncated PNG, a wrong-size PNG, a leftover temp file and unrelated files.
    good = folder.path(Item(2, 0)).read_bytes()
    folder.path(Item(2, 1)).write_bytes(good[: len(good) // 2])
    Image.new("RGB", (9, 9)).save(folder.path(Item(2, 2)))
    (folder.root / "2" / ".5.png.abc.tmp").write_bytes(b"partial")
    (folder.root / "2" / "notes.txt").write_text("x")
    (folder.root / "2" / "007.png").write_bytes(good)  # not a canonical seed name: ignored
    (folder.root / "9").mkdir()
    write_image(folder, Item(9, 0))  # grade outside 0..C-1: ignored

    scan = folder.scan()
    assert set(scan.images) == {Item(2, 0), Item(2, 1), Item(2, 2)}
    assert [p.name for p in scan.temporary] == [".5.png.abc.tmp"]
    folder.remove_temporary(scan)
    assert not (folder.root / "2" / ".5.png.abc.tmp").exists()
    valid = folder.valid_items(scan)
    assert valid == {Item(2, 0)}
    assert folder.path(Item(2, 1)).exists()  # validation alone deletes nothing
    assert folder.remove_invalid(scan, valid) == 2
    assert not folder.path(Item(2, 1)).exists() and not folder.path(Item(2, 2)).exists()
    assert is_valid_png(folder.path(Item(2, 0)), 8) and not is_valid_png(folder.path(Item(2, 0)), 16)


def test_folder_refuses_other_settings_unless_forced(tmp_path):
    folder = SynthesisFolder(tmp_path / "syn", image_size=8, num_classes=5)
    folder.prepare(record())
    write_image(folder, Item(1, 0))
    folder.write_manifest(folder.manifest_frame([Item(1, 0)], record()))
    assert folder.prepare(record()) == 0  # same identity: resume, nothing removed
    assert folder.prepare(record(), force=True) == 0
    with pytest.raises(OdmaugError, match=r"made with guidance_scale=2\.0 \(now 3\.0\).*--force"):
        folder.prepare(record(guidance_scale=3.0))
    with pytest.raises(OdmaugError, match="checkpoint_id='abc'"):
        folder.prepare(record(checkpoint_id="other"))
    assert folder.path(Item(1, 0)).exists() and folder.read_record()["identity"]["checkpoint_id"] == "abc"
    assert folder.prepare(record(checkpoint_id="other"), force=True) == 1
    assert not folder.path(Item(1, 0)).exists() and not folder.manifest_path.exists()
    assert folder.read_record()["identity"]["checkpoint_id"] == "other"


def test_a_folder_recorded_before_timestep_spacing_existed_was_made_with_leading(tmp_path):
    import json

    folder = SynthesisFolder(tmp_path / "syn", image_size=8, num_classes=5)
    old = record()
    del old["identity"]["timestep_spacing"]
    folder.root.mkdir(parents=True)
    folder.record_path.write_text(json.dumps(old))
    with pytest.raises(OdmaugError, match=r"timestep_spacing='leading' \(now 'trailing'\)"):
        folder.prepare(record())
    assert folder.prepare(record(timestep_spacing="leading")) == 0  # resuming it with its own spacing works


def test_folder_without_record_or_with_damaged_record(tmp_path):
    folder = SynthesisFolder(tmp_path / "syn", image_size=8, num_classes=5)
    write_image(folder, Item(0, 3))
    with pytest.raises(OdmaugError, match="holds 1 images without synthesis.json"):
        folder.prepare(record())
    folder.record_path.write_text("{not json")
    with pytest.raises(OdmaugError, match="not a synthesis record"):
        folder.prepare(record())
    assert folder.prepare(record(), force=True) == 1


def test_manifest_rows(tmp_path):
    folder = SynthesisFolder(tmp_path / "syn", image_size=8, num_classes=5)
    folder.prepare(record())
    items = [Item(4, 1), Item(3, 0), Item(4, 0)]
    for item in items:
        write_image(folder, item)
    folder.write_manifest(folder.manifest_frame(items, record(), {"predicted_grade": {Item(4, 1): 3, Item(3, 0): 3, Item(4, 0): 4}}))
    raw = pd.read_csv(folder.manifest_path)
    assert raw["path"].tolist() == ["3/0.png", "4/0.png", "4/1.png"]  # relative, sorted by grade and seed
    assert raw["predicted_grade"].tolist() == [3, 4, 3]
    frame = read_manifest(folder.manifest_path, 5)
    assert set(frame["source"]) == {"synthetic"} and set(frame["split"]) == {"train"}
    assert frame["label"].tolist() == [3, 4, 4] and frame["seed"].tolist() == [0, 0, 1]
    for column in ("generator_run", "checkpoint_id", "sampler", "steps", "guidance_scale", "eta"):
        assert frame[column].notna().all()


def test_disk_space_estimate_and_refusal(tmp_path, monkeypatch):
    assert estimate_png_bytes(8) == 4096 and estimate_png_bytes(64) == 16384
    # A real PNG of noise never exceeds the estimate.
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    assert path.stat().st_size <= estimate_png_bytes(64)
    assert check_disk_space(tmp_path / "not" / "yet", 10, 32) > 0

    import shutil

    class Usage:
        free = 50 * 2**20

    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(OdmaugError, match=r"not enough disk space.*50000 images need about"):
        check_disk_space(tmp_path, 50_000, 64)


def test_a_folder_of_real_images_or_a_run_is_never_used_as_output(tmp_path):
    photos = tmp_path / "photos"
    (photos / "4").mkdir(parents=True)
    (photos / "4" / "Patient001_left.jpg").write_bytes(b"real photo")
    folder = SynthesisFolder(photos, image_size=8, num_classes=5)
    for force in (False, True):  # not even --force may mix with (or delete) the user's images
        with pytest.raises(OdmaugError, match=r"did not write \(e\.g\. .*Patient001_left\.jpg\).*new or empty --out"):
            folder.prepare(record(), force=force)
    assert sorted(p.name for p in photos.rglob("*")) == ["4", "Patient001_left.jpg"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    with pytest.raises(OdmaugError, match="config.yaml"):
        SynthesisFolder(run, image_size=8, num_classes=5).prepare(record(), force=True)
