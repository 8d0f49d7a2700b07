"""odmaug.data.balance and ``odmaug balance``: strategies, caps, real-only val/test, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.config import load_recipe
from odmaug.data import ImageTable, load_table
from odmaug.data.balance import balance, share_cap, shortfall_messages
from odmaug.data.sources import read_manifest
from odmaug.errors import OdmaugError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
REAL_TRAIN = [40, 10, 6, 3]  # images per grade in the training split


def real_table() -> ImageTable:
    rows = []
    for split, counts in (("train", REAL_TRAIN), ("val", [4, 2, 2, 1]), ("test", [5, 3, 2, 2])):
        for grade, n in enumerate(counts):
            rows += [{"path": f"synthetic://16/0/{split}{grade}{i}/{grade}", "label": grade, "split": split} for i in range(n)]
    return ImageTable(pd.DataFrame(rows), 4, "real")


def synthetic_table(tmp: Path, counts: list[int], tag: str = "a") -> ImageTable:
    rows = []
    for grade, n in enumerate(counts):
        for seed in range(n):
            path = tmp / tag / str(grade) / f"{seed}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")
            rows.append({"path": str(path), "label": grade, "split": "train", "source": "synthetic", "seed": seed})
    return ImageTable(pd.DataFrame(rows), 4, f"syn-{tag}")


def added_rows(merged: ImageTable, real: ImageTable) -> pd.DataFrame:
    return merged.frame.iloc[len(real):]


def assert_real_kept(merged: ImageTable, real: ImageTable) -> None:
    """Every real row is kept, unchanged and in order; val/test hold exactly the real rows."""
    head = merged.frame.iloc[: len(real)][real.frame.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(head, real.frame.reset_index(drop=True))
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(
            merged.split(split).frame[real.frame.columns].reset_index(drop=True),
            real.split(split).frame.reset_index(drop=True),
        )
    assert set(added_rows(merged, real)["split"]) <= {"train"}


def test_match_majority_fills_every_grade(tmp_path):
    real = real_table()
    merged, counts = balance(real, [synthetic_table(tmp_path, [5, 50, 50, 50])], "match-majority")
    assert_real_kept(merged, real)
    assert merged.split("train").counts().tolist() == [40, 40, 40, 40]
    assert counts["added"].tolist() == [0, 30, 34, 37]
    assert counts["shortfall"].tolist() == [0, 0, 0, 0]
    assert set(added_rows(merged, real)["source"]) == {"synthetic"}
    assert shortfall_messages(counts, "match-majority") == []


def test_to_count_never_drops_real_and_reports_shortfall(tmp_path):
    real = real_table()
    merged, counts = balance(real, [synthetic_table(tmp_path, [0, 5, 50, 50])], "to-count", to_count=20)
    assert_real_kept(merged, real)
    # grade 0 already holds 40 > 20: nothing dropped; grade 1 has only 5 synthetic images.
    assert merged.split("train").counts().tolist() == [40, 15, 20, 20]
    assert counts["shortfall"].tolist() == [0, 5, 0, 0]
    messages = shortfall_messages(counts, "to-count")
    assert len(messages) == 1 and "grade 1" in messages[0] and "only 5 synthetic" in messages[0]


def test_synthetic_share_cap(tmp_path):
    real = real_table()
    for share in (0.25, 0.5, 0.75):
        merged, counts = balance(real, [synthetic_table(tmp_path, [50] * 4)], "match-majority", max_synthetic_share=share)
        syn = added_rows(merged, real)
        for grade, n_real in enumerate(REAL_TRAIN):
            n_syn = int((syn["label"] == grade).sum())
            assert n_syn == min(40 - n_real, share_cap(n_real, share))
            assert n_syn / (n_real + n_syn) <= share + 1e-12
            assert (n_syn + 1) / (n_real + n_syn + 1) > share or n_real + n_syn == 40  # the cap is tight
        assert any("cap" in m for m in shortfall_messages(counts, "match-majority", share))
    assert share_cap(10, 0.5) == 10 and share_cap(3, 0.75) == 9 and share_cap(7, 1.0) == float("inf")


def test_picks_are_seeded_and_deduplicated(tmp_path):
    real = real_table()
    pool = synthetic_table(tmp_path, [0, 60, 60, 60])
    first, _ = balance(real, [pool], seed=1)
    again, _ = balance(real, [pool, pool], seed=1)  # the same manifest twice adds nothing
    other, _ = balance(real, [pool], seed=2)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert not added_rows(first, real)["path"].duplicated().any()
    assert set(added_rows(first, real)["path"]) != set(added_rows(other, real)["path"])
    # Extra manifest columns (seed, generator provenance) survive the merge.
    assert "seed" in first.frame.columns and added_rows(first, real)["seed"].notna().all()


def test_oversample_repeats_real_training_images():
    real = real_table()
    merged, counts = balance(real, [], "oversample", seed=3)
    assert_real_kept(merged, real)
    assert merged.split("train").counts().tolist() == [40, 40, 40, 40]
    extra = added_rows(merged, real)
    assert set(extra["source"]) == {"oversampled"}
    train = real.split("train").frame
    for grade in range(4):
        allowed = set(train.loc[train["label"] == grade, "path"])
        assert set(extra.loc[extra["label"] == grade, "path"]) <= allowed
    # Drawn with replacement (RandomOverSampler): a grade of 3 images repeated 37 times.
    assert extra.loc[extra["label"] == 3, "path"].nunique() <= 3
    again, _ = balance(real, [], "oversample", seed=3)
    pd.testing.assert_frame_equal(merged.frame, again.frame)
    other, _ = balance(real, [], "oversample", seed=4)
    assert not merged.frame["path"].equals(other.frame["path"])
    capped, counts = balance(real, [], "oversample", to_count=30, max_synthetic_share=0.5)
    assert capped.split("train").counts().tolist() == [40, 20, 12, 6]


def test_oversample_grade_without_real_images_is_a_shortfall():
    frame = real_table().frame
    real = ImageTable(frame[~((frame["label"] == 3) & (frame["split"] == "train"))], 4, "real")
    merged, counts = balance(real, [], "oversample")
    assert merged.split("train").counts()[3] == 0
    assert "no real training image" in shortfall_messages(counts, "oversample")[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "smote"}, "unknown balancing strategy"),
        ({"strategy": "to-count"}, "needs --to-count"),
        ({"strategy": "to-count", "to_count": 0}, "at least 1"),
        ({"strategy": "match-majority", "to_count": 5}, "only applies"),
        ({"max_synthetic_share": 0.0}, "(0, 1]"),
        ({"max_synthetic_share": 1.5}, "(0, 1]"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(OdmaugError, match=message.replace("(", r"\(").replace("]", r"\]")):
        balance(real_table(), [], **kwargs)


def test_bad_synthetic_sets(tmp_path):
    real = real_table()
    pool = synthetic_table(tmp_path, [1, 1, 1, 1])
    with pytest.raises(OdmaugError, match="oversample repeats real images"):
        balance(real, [pool], "oversample")
    with pytest.raises(OdmaugError, match="has 5 grades"):
        balance(real, [ImageTable(pool.frame, 5, "five")])
    Path(pool.frame.at[2, "path"]).unlink()
    with pytest.raises(OdmaugError, match="1 synthetic image.*missing"):
        balance(real, [pool])


def test_cli_balance_smoke_recipe(tmp_path):
    recipe = RECIPES / "smoke.yaml"
    real = load_table(load_recipe(recipe).data)
    runner = CliRunner()
    out = tmp_path / "datasets" / "over.csv"
    result = runner.invoke(app, ["balance", "--recipe", str(recipe), "--strategy", "oversample", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "after" in result.output and "wrote" in result.output
    frame = read_manifest(out, real.num_classes)
    majority = real.split("train").counts().max()
    assert np.bincount(frame.loc[frame["split"] == "train", "label"]).tolist() == [majority] * 5
    for split in ("val", "test"):
        assert frame.loc[frame["split"] == split, "path"].tolist() == real.split(split).paths
        assert set(frame.loc[frame["split"] == split, "source"]) == {"real"}

    # A synthetic manifest too small for the strategy: the data set is written, with a warning.
    rows = [{"path": f"syn/{g}/{s}.png", "label": g} for g in (3, 4) for s in range(2)]
    for row in rows:  # real PNGs: balance checks every image it lists before writing (issue 25)
        (tmp_path / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / row["path"])
    pd.DataFrame(rows).to_csv(tmp_path / "syn.csv", index=False)
    out2 = tmp_path / "datasets" / "syn.csv"
    result = runner.invoke(
        app, ["balance", "--recipe", str(recipe), "--synthetic", str(tmp_path / "syn.csv"), "--out", str(out2)]
    )
    assert result.exit_code == 0, result.output
    assert "warning: grade 3" in result.output
    frame = read_manifest(out2, real.num_classes)
    assert (frame["source"] == "synthetic").sum() == 4

    # Bad input: one line, exit 2, the existing output untouched.
    before = out.read_bytes()
    result = runner.invoke(app, ["balance", "--recipe", str(recipe), "--strategy", "to-count", "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --strategy to-count needs --to-count M"]
    assert out.read_bytes() == before
    result = runner.invoke(
        app, ["balance", "--recipe", str(recipe), "--synthetic", str(tmp_path / "nope.csv"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "manifest not found" in result.output
