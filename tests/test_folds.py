"""Cross-validation folds: every image tested once, grades stratified, patients never split."""

import numpy as np
import pytest
from sklearn.model_selection import StratifiedKFold

from odmaug.data.folds import assign_folds, check_no_leakage, fold_warnings
from odmaug.errors import OdmaugError


def _skewed(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice(5, size=n, p=[0.45, 0.1, 0.25, 0.15, 0.05])


def test_each_image_is_tested_once_and_parts_are_disjoint():
    labels = _skewed()
    folds = assign_folds(labels, folds=5, val_fraction=0.1, seed=3)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(labels)))
    for f in folds:
        parts = [set(f.train), set(f.val), set(f.test)]
        assert sum(map(len, parts)) == len(labels)
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert set(np.unique(labels[f.train])) == set(range(5))  # every grade trains


def test_test_parts_equal_sklearn_and_are_stratified():
    labels = _skewed()
    folds = assign_folds(labels, folds=5, seed=7)
    reference = StratifiedKFold(5, shuffle=True, random_state=7).split(np.zeros(len(labels)), labels)
    for f, (_, test) in zip(folds, reference):
        assert np.array_equal(f.test, np.sort(test))
        counts = np.bincount(labels[f.test], minlength=5)
        assert np.all(np.abs(counts - np.bincount(labels, minlength=5) / 5) <= 1)


def test_groups_never_straddle_parts():
    labels = _skewed(300)
    groups = np.repeat(np.arange(150), 2)  # two eyes per patient
    labels[1::2] = labels[::2]
    for f in assign_folds(labels, groups, folds=5, val_fraction=0.2, seed=1):
        owners = [set(groups[part]) for part in (f.train, f.val, f.test)]
        assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])


def test_deterministic_and_seeded():
    labels = _skewed()
    a, b = assign_folds(labels, seed=0), assign_folds(labels, seed=0)
    assert all(np.array_equal(x.test, y.test) and np.array_equal(x.val, y.val) for x, y in zip(a, b))
    c = assign_folds(labels, seed=1)
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c))


def test_rare_grade_warning_and_errors():
    labels = np.array([0] * 20 + [1] * 20 + [4] * 2)
    folds = assign_folds(labels, folds=5, val_fraction=0.0)
    lines = fold_warnings(labels, folds)
    assert len(lines) == 1 and lines[0].startswith("grade 4 has 2 images")
    with pytest.raises(OdmaugError, match="at least 2 folds"):
        assign_folds(labels, folds=1)
    with pytest.raises(OdmaugError, match="need at least 5 patient groups"):
        assign_folds(labels[:4], np.arange(4), folds=5)


def test_leakage_check_names_the_image():
    check_no_leakage(["a.png", "b.png"], ["c.png"])
    with pytest.raises(OdmaugError, match="1 test image.*c.png"):
        check_no_leakage(["a.png", "c.png"], ["c.png"])
