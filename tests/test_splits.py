"""Stratified train/val/test splits for any grade counts (odmaug.data.splits), issue 13 item 3."""

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import StratifiedShuffleSplit
from typer.testing import CliRunner

from odmaug.cli import app
from odmaug.data.splits import assign_splits, split_warnings
from odmaug.data.synthetic import synthetic_labels
from odmaug.errors import OdmaugError

runner = CliRunner()
SPLITS = ("train", "val", "test")


def _per_grade(labels, splits, num_grades):
    return {s: np.bincount(labels[splits == s], minlength=num_grades).tolist() for s in SPLITS}


# --- random layouts for the property test ------------------------------------------------------


def _layout(rng, kind):
    """(labels, groups or None) for a random count vector; ``kind`` is none, patients or mixed.

    Counts mix tiny grades (0-3 images), skewed ones and ample ones; ``patients`` puts 1-3
    same-grade images in each group; ``mixed`` gives each patient a grade k and 1-3 images, most
    often one of a lower grade (two eyes, different grades).
    """
    num_grades = int(rng.integers(2, 6))
    pick = rng.random()
    if pick < 0.4:
        counts = rng.integers(0, 4, size=num_grades)
    elif pick < 0.7:
        counts = rng.integers(1, 12, size=num_grades)
    else:
        counts = np.sort(rng.integers(1, 80, size=num_grades))[::-1]
    counts[rng.integers(num_grades)] = max(1, counts.max())  # never an empty set
    if kind == "none":
        return synthetic_labels(counts.tolist()), None
    labels, groups = [], []
    for grade, n in enumerate(counts):
        left = int(n)
        while left:
            size = min(left, int(rng.integers(1, 4)))
            eyes = [grade] * size
            if kind == "mixed" and grade > 0 and size > 1 and rng.random() < 0.8:
                eyes[1] = int(rng.integers(0, grade))
            labels += eyes
            groups += [f"p{len(set(groups))}"] * size
            left -= size
    order = rng.permutation(len(labels))  # rows of a group need not be adjacent
    return np.array(labels)[order], np.array(groups)[order]


def _check(labels, groups, val, test, seed):
    """Assert the documented properties of one split, or that OdmaugError was the only way out.

    Units are images (no groups) or groups; a group's grade is its highest image grade. For each
    grade with n units and each split s with fraction f (train: 1 - val - test), c units in s:
    * every image grade present has an image in train;
    * n >= 3: c >= 1 in every split with f > 0; n == 2: one unit in train, one in val or test
      (when either fraction is > 0);
    * c < n*f + 1 always; c > n*f - 1 when n*f >= 1 in every split with f > 0 (no minimum of one
      unit binds), and c > n*f - 2 otherwise;
    * no group in two splits; the same seed gives the same splits.
    An OdmaugError is raised exactly when val or test (fraction > 0) would be empty: no grade has
    3 units and fewer grades have 2 units than held-out splits are asked for.
    """
    if groups is None:
        units, unit_grade = np.arange(len(labels)), labels
    else:
        _, units = np.unique(groups, return_inverse=True)
        unit_grade = np.zeros(units.max() + 1, dtype=int)
        np.maximum.at(unit_grade, units, labels)
    sizes = np.bincount(unit_grade)
    asked = [f for f in (val, test) if f > 0]
    starved = sizes.max() < 3 and (sizes == 2).sum() < len(asked)
    try:
        splits = assign_splits(labels, groups, val, test, seed)
    except OdmaugError as err:
        assert starved and "too few" in str(err), (labels, groups, err)
        return
    assert not starved
    assert np.array_equal(splits, assign_splits(labels, groups, val, test, seed))
    unit_split = {}
    for u, s in zip(units, splits):
        assert unit_split.setdefault(u, s) == s, "a group straddles two splits"
    assert set(labels[splits == "train"]) == set(labels)
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    per_unit = np.array([unit_split[u] for u in range(len(unit_grade))])
    for grade, n in enumerate(sizes):
        if n == 0:
            continue
        c = {s: int(((unit_grade == grade) & (per_unit == s)).sum()) for s in SPLITS}
        share = {s: n * f for s, f in fractions.items()}
        assert c["train"] >= 1
        if n >= 3:
            assert all(c[s] >= 1 for s in ("val", "test") if fractions[s] > 0), (grade, n, c)
        if n == 2 and asked:
            assert c["train"] == 1 and c["val"] + c["test"] == 1
        slack = 1 if n >= 3 and all(share[s] >= 1 for s in SPLITS if fractions[s] > 0) else 2
        for s in SPLITS:
            assert share[s] - slack < c[s] < share[s] + 1, (grade, n, s, c, share)


@pytest.mark.parametrize("kind", ["none", "patients", "mixed"])
def test_split_properties_hold_for_random_counts_groups_and_seeds(kind):
    rng = np.random.default_rng({"none": 0, "patients": 1, "mixed": 2}[kind])
    for _ in range(250):
        labels, groups = _layout(rng, kind)
        val, test = rng.choice([(0.1, 0.2), (0.2, 0.2), (0.15, 0.15), (0.0, 0.2), (0.1, 0.0), (0.05, 0.5)])
        _check(labels, groups, float(val), float(test), int(rng.integers(0, 1000)))


def test_ample_counts_match_scikit_learn_within_one_image():
    for counts in ([486, 128, 206, 194, 66], [300, 120, 80, 40, 25], [60, 30, 24, 16, 10], [997, 13, 41, 250, 5]):
        labels = synthetic_labels(counts)
        ours = _per_grade(labels, assign_splits(labels, None, 0.1, 0.2, seed=3), len(counts))
        for split, fraction in (("test", 0.2), ("val", 0.1)):
            sss = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=3)
            _, held = next(sss.split(np.zeros(len(labels)), labels))
            theirs = np.bincount(labels[held], minlength=len(counts))
            assert np.abs(np.array(ours[split]) - theirs).max() <= 1, (counts, split, ours[split], theirs)


# --- the reported inputs (each fails on the old code) --------------------------------------------


def test_a_single_grade_4_image_stays_in_train_for_every_seed():
    labels = synthetic_labels([60, 20, 10, 6, 1])
    for seed in range(20):  # the old unstratified fallback left grade 4 (or another) out of train in 7
        splits = assign_splits(labels, None, 0.1, 0.2, seed)
        counts = _per_grade(labels, splits, 5)
        assert min(counts["train"]) >= 1 and counts["train"][4] == 1, (seed, counts)
        assert counts["val"][:4] == [6, 2, 1, 1] and counts["test"][:4] == [12, 4, 2, 1]
    assert split_warnings(labels, splits, 0.1, 0.2) == [
        "grade 4 has 1 image: it is in train only; val and test have no grade-4 image"
    ]


def test_two_grade_4_images_keep_val_stratified():
    labels = synthetic_labels([60, 20, 10, 6, 2])
    counts = _per_grade(labels, assign_splits(labels, None, 0.1, 0.2, 0), 5)
    # At least each grade's rounded-down share 0.1 x [60, 20, 10]; the old split gave [7, 3, 0, 0, 0].
    assert all(c >= share for c, share in zip(counts["val"], [6, 2, 1])), counts
    assert counts["train"][4] == 1 and counts["test"][4] == 1 and counts["val"][4] == 0


def test_four_images_per_grade_split_without_error():
    labels = synthetic_labels([4, 4, 4, 4, 4])  # scikit-learn raised "test_size = 4 should be >= 5"
    counts = _per_grade(labels, assign_splits(labels, None, 0.1, 0.2, 0), 5)
    assert counts == {"train": [2] * 5, "val": [1] * 5, "test": [1] * 5}


def test_two_images_per_grade_fill_both_held_out_splits():
    labels = synthetic_labels([2, 2, 2, 2, 2])
    counts = _per_grade(labels, assign_splits(labels, None, 0.1, 0.2, 0), 5)
    assert counts["train"] == [1] * 5 and sum(counts["val"]) >= 1 and sum(counts["test"]) >= 1


def test_too_small_a_set_is_one_clear_error():
    too_few = "5 images are too few for val and test splits.*set data.val_fraction and data.test_fraction to 0"
    with pytest.raises(OdmaugError, match=too_few):
        assign_splits(synthetic_labels([1, 1, 1, 1, 1]), None, 0.1, 0.2, 0)
    splits = assign_splits(synthetic_labels([1, 1, 1, 1, 1]), None, 0.0, 0.0, 0)
    assert set(splits) == {"train"}  # nothing held out was asked for


def test_a_grade_seen_only_as_a_lesser_eye_is_swapped_into_train():
    # Grade 1 appears only as the second eye of one grade-2 patient; the six grade-2 patients are
    # split 4/1/1 by their higher grade, so that patient lands in val or test for some seeds and
    # must trade places with a train patient of grade 2 (the per-split counts stay 4/1/1).
    labels = np.array([2, 1] + [2] * 5 + [0] * 6)
    groups = np.array(["p0", "p0", "p1", "p2", "p3", "p4", "p5"] + [f"q{i}" for i in range(6)])
    for seed in range(10):
        splits = assign_splits(labels, groups, 0.2, 0.2, seed)
        assert splits[0] == splits[1] == "train"
        patients = {g: splits[groups == g][0] for g in set(groups) if g.startswith("p")}
        assert sorted(patients.values()) == ["test", "train", "train", "train", "train", "val"]


def test_lesser_eye_grades_that_cannot_swap_still_reach_train():
    # Grades 0 and 1 appear only as second eyes of two of three grade-2 patients: train keeps both,
    # even when a held-out split then loses its grade-2 patient (the warning says so).
    labels = np.array([2, 1, 2, 0, 2] + [3] * 6)
    groups = np.array(["p0", "p0", "p1", "p1", "p2"] + [f"q{i}" for i in range(6)])
    for seed in range(20):
        splits = assign_splits(labels, groups, 0.2, 0.2, seed)
        assert set(labels[splits == "train"]) == {0, 1, 2, 3}
        assert splits[0] == splits[1] and splits[2] == splits[3]
        lines = split_warnings(labels, splits, 0.2, 0.2, groups)
        assert all("group" in line for line in lines) and any(line.startswith("grade 2 ") for line in lines)


# --- through the CLI -----------------------------------------------------------------------------


def test_cli_splits_four_images_per_grade():
    args = ["data", "info", "--set", "data.source=synthetic", "--set", "data.synthetic.counts=[4,4,4,4,4]"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # the old code ended in a scikit-learn traceback
    cells = [line.split("│") for line in result.output.splitlines() if line.count("│") > 7]
    rows = {c[1].strip(): [x.strip() for x in c[2:7]] for c in cells}  # split -> images of grades 0..4
    assert rows == {"train": ["2"] * 5, "val": ["1"] * 5, "test": ["1"] * 5}


def test_cli_warns_about_a_grade_missing_from_val_and_test():
    counts = "data.synthetic.counts=[60,20,10,6,1]"
    result = runner.invoke(app, ["data", "info", "--set", "data.source=synthetic", "--set", counts])
    assert result.exit_code == 0, result.output
    assert "warning: grade 4 has 1 image: it is in train only; val and test have no grade-4 image" in result.output


def test_cli_folder_too_small_for_a_test_split_is_one_error_line(tmp_path):
    for grade in range(5):
        (tmp_path / str(grade)).mkdir()
        Image.fromarray(np.full((8, 8, 3), 40 * grade, np.uint8)).save(tmp_path / str(grade) / "0.png")
    args = ["data", "info", "--set", "data.source=folder", "--set", f"data.path={tmp_path}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 5 images are too few for val and test splits"), lines


def test_a_grade_without_any_image_is_named(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from odmaug.cli import app

    for grade in (0, 1, 2, 4):  # grade 3 absent
        (tmp_path / "set" / str(grade)).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (grade * 40, 0, 0)).save(tmp_path / "set" / str(grade) / f"{i}.png")
    result = CliRunner().invoke(app, ["data", "info", "--source", str(tmp_path / "set")])
    assert result.exit_code == 0 and "no images at all of grade 3" in result.output
