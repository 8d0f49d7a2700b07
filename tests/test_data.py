import numpy as np
import pandas as pd
import pytest
from PIL import Image

from odmaug.config import DataConfig
from odmaug.data import GradeDataset, load_table, load_uint8, table_from_spec, to_model_range, write_manifest
from odmaug.data import retinamnist
from odmaug.data.sources import read_manifest
from odmaug.data.splits import assign_splits
from odmaug.data.synthetic import draw_fundus
from odmaug.errors import OdmaugError


def _png(path, colour, size=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), colour, np.uint8)).save(path)


def _folder(root, per_grade=(4, 3, 3)):
    for grade, n in enumerate(per_grade):
        for i in range(n):
            _png(root / str(grade) / f"{i}.png", 40 * grade + i)
    return root


# --- RetinaMNIST -----------------------------------------------------------------------------


def test_retinamnist_counts_match_the_official_splits(retinamnist_dir):
    table = load_table(DataConfig(source="retinamnist", data_dir=str(retinamnist_dir)))
    assert table.split("train").counts().tolist() == [486, 128, 206, 194, 66]
    assert table.split("val").counts().tolist() == [54, 12, 28, 20, 6]
    assert table.split("test").counts().tolist() == [174, 46, 92, 68, 20]
    images = load_uint8(table.split("val"), 32)
    assert images.shape == (120, 3, 32, 32) and images.dtype.__str__() == "torch.uint8"
    scaled = to_model_range(images)
    assert scaled.min() >= -1 and scaled.max() <= 1


def test_retinamnist_wrong_md5_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("ODMAUG_DATA_DIR", raising=False)
    np.savez(tmp_path / "retinamnist.npz", train_images=np.zeros((1, 28, 28, 3), np.uint8))
    with pytest.raises(OdmaugError, match="wrong md5"):
        retinamnist.locate(tmp_path)


def test_retinamnist_missing_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv("ODMAUG_DATA_DIR", raising=False)
    monkeypatch.setenv("ODMAUG_OFFLINE", "1")
    with pytest.raises(OdmaugError, match="ODMAUG_DATA_DIR or pass --data-dir"):
        retinamnist.locate(tmp_path)


# --- synthetic ---------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_grade_is_ordered():
    cfg = DataConfig(source="synthetic", image_size=32)
    a, b = load_table(cfg), load_table(cfg)
    assert a.frame.equals(b.frame)
    assert np.array_equal(a.read(5), b.read(5))

    # A simple statistic rises with grade: the share of lesion-coloured pixels inside the disc
    # (very dark red haemorrhages or bright yellow exudates).
    def lesion_share(img):
        r, g, b_ = (img[..., c].astype(int) for c in range(3))
        disc = img.sum(-1) > 0
        haem = (r < 110) & (g < 30) & disc
        exud = (r > 230) & (g > 200) & (b_ < 150) & disc
        return (haem | exud).sum() / disc.sum()

    means = [np.mean([lesion_share(draw_fundus(g, 5, 64, 0, i)) for i in range(12)]) for g in range(5)]
    assert all(x < y for x, y in zip(means, means[1:])), means


# --- folders and manifests -------------------------------------------------------------------


def test_folder_source_with_deterministic_stratified_splits(tmp_path):
    root = _folder(tmp_path / "imgs", (20, 10, 10))
    cfg = DataConfig(source="folder", path=str(root), num_classes=3, val_fraction=0.2, test_fraction=0.2)
    a, b = load_table(cfg), load_table(cfg)
    assert a.frame.equals(b.frame)
    assert len(a) == 40 and set(a.splits()) == {"train", "val", "test"}
    for split in ("val", "test"):
        assert (a.split(split).counts() > 0).all()  # stratified: every grade in every split
    other = load_table(cfg.model_copy(update={"split_seed": 1}))
    assert not a.frame["split"].equals(other.frame["split"])


def test_manifest_with_split_and_relative_paths(tmp_path):
    _folder(tmp_path / "imgs", (2, 2))
    rows = [{"path": f"imgs/{g}/{i}.png", "label": g, "split": "train" if i == 0 else "test"} for g in (0, 1) for i in (0, 1)]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    table = load_table(DataConfig(source="manifest", path=str(tmp_path / "m.csv"), num_classes=2))
    assert table.split("train").counts().tolist() == [1, 1]
    assert table.read(0).shape == (12, 12, 3)
    # write_manifest stores paths relative to its own folder and reads back the same rows
    out = write_manifest(table, tmp_path / "copy.csv")
    assert pd.read_csv(out)["path"].iloc[0] == "imgs/0/0.png"
    assert read_manifest(out, 2)["path"].tolist() == table.paths


def test_grouped_splits_keep_groups_together():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 2)  # two eyes per patient
    labels = rng.integers(0, 3, size=200)
    splits = assign_splits(labels, groups, 0.1, 0.2, seed=0)
    for g in range(100):
        assert len(set(splits[groups == g])) == 1
    assert set(splits) == {"train", "val", "test"}
    assert np.array_equal(splits, assign_splits(labels, groups, 0.1, 0.2, seed=0))


def test_grade_dataset_crops_and_resizes(tmp_path):
    _folder(tmp_path / "imgs", (2, 2))
    table = table_from_spec(str(tmp_path / "imgs"), DataConfig(num_classes=2))
    ds = GradeDataset(table, 8, crop_box=(2, 2, 10, 10))
    image, label = ds[3]
    assert image.shape == (3, 8, 8) and int(label) == 1


# --- bad input ----------------------------------------------------------------------------------


def test_missing_paths(tmp_path):
    with pytest.raises(OdmaugError, match="image folder not found"):
        load_table(DataConfig(source="folder", path=str(tmp_path / "nope")))
    with pytest.raises(OdmaugError, match="manifest not found"):
        load_table(DataConfig(source="manifest", path=str(tmp_path / "nope.csv")))


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    root = _folder(tmp_path / "imgs", (2, 2))
    (root / "0" / "0.png").write_bytes(b"not a png")
    good = (root / "1" / "0.png").read_bytes()
    (root / "1" / "1.png").write_bytes(good[: len(good) // 2])
    # loading checks every image first (issue 25): both bad files are counted, the first named
    with pytest.raises(OdmaugError, match=r"corrupt or unreadable image: .*0[/\\]0\.png.*2 of the 4 images"):
        table_from_spec(str(root), DataConfig(num_classes=2))
    table = table_from_spec(str(root), DataConfig(num_classes=2), check_images=False)  # the decoder's own errors
    with pytest.raises(OdmaugError, match=r"corrupt or unreadable image: .*0[/\\]0\.png"):
        load_uint8(table, 8)
    index = table.paths.index(str((root / "1" / "1.png").resolve()))
    with pytest.raises(OdmaugError, match=r"1[/\\]1\.png"):
        table.read(index)


@pytest.mark.parametrize(
    "label, message",
    [("two", "is not an integer grade"), ("1.5", "is not an integer grade"), ("7", "outside 0..2"), ("-1", "outside 0..2")],
)
def test_bad_labels(tmp_path, label, message):
    _folder(tmp_path / "imgs", (1,))
    (tmp_path / "m.csv").write_text(f"path,label\nimgs/0/0.png,0\nimgs/0/0.png,{label}\n")
    with pytest.raises(OdmaugError, match=message):
        read_manifest(tmp_path / "m.csv", 3)


def test_folder_with_non_integer_or_out_of_range_grade(tmp_path):
    _png(tmp_path / "a" / "mild" / "0.png", 1)
    with pytest.raises(OdmaugError, match="not an integer grade"):
        load_table(DataConfig(source="folder", path=str(tmp_path / "a"), num_classes=2))
    _png(tmp_path / "b" / "5" / "0.png", 1)
    with pytest.raises(OdmaugError, match="outside 0..1"):
        load_table(DataConfig(source="folder", path=str(tmp_path / "b"), num_classes=2))


def test_grade_with_no_images(tmp_path):
    _folder(tmp_path / "imgs", (6, 6))
    with pytest.raises(OdmaugError, match="grade 2 has no images"):
        load_table(DataConfig(source="folder", path=str(tmp_path / "imgs"), num_classes=3))


def test_manifest_path_escaping_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.csv").write_text("path,label\n../../etc/passwd,0\n")
    with pytest.raises(OdmaugError, match="escapes the manifest's folder"):
        read_manifest(tmp_path / "sub" / "m.csv", 2)


def test_manifest_missing_columns_and_empty(tmp_path):
    (tmp_path / "a.csv").write_text("file,grade\nx.png,0\n")
    with pytest.raises(OdmaugError, match="lacks column"):
        read_manifest(tmp_path / "a.csv", 2)
    (tmp_path / "b.csv").write_text("path,label\n")
    with pytest.raises(OdmaugError, match="no rows"):
        read_manifest(tmp_path / "b.csv", 2)
