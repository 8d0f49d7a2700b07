"""Cross-validation folds: stratified by grade, grouped by patient, with a val part inside each fold.

Each labelled image is in the test part of exactly one fold. The test parts come from
scikit-learn's :class:`~sklearn.model_selection.StratifiedGroupKFold` when a group (patient) column
exists, so both eyes of one patient are always in one fold's test part, else from
:class:`~sklearn.model_selection.StratifiedKFold`; both shuffle with the given seed (the grouped
one through :func:`_shuffled_groups`, so every scikit-learn release gives the same folds). The
rest of a fold is split into train and val by :func:`odmaug.data.splits.assign_splits`
(stratified, grouped, every grade with an image keeps one in train), with the same seed plus the
fold's index.

Whatever a fold trains (generators, classifiers) sees its train part only, and its val part is the
one place a choice (a checkpoint, a strength) may be made: nothing of a fold's test part reaches
them. :func:`check_no_leakage` asserts that for a pair of tables.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from odmaug.data.splits import assign_splits
from odmaug.errors import OdmaugError


@dataclass(frozen=True)
class Fold:
    """Row indices (into the table that was folded) of one fold's three parts, each sorted."""

    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _shuffled_groups(groups: np.ndarray, seed: int) -> np.ndarray:
    """Each patient id replaced by its seeded random rank (ints 0..G-1, shape (N,)).

    StratifiedGroupKFold visits groups by label-distribution spread, ties in the order of their
    sorted ids; random ids break those ties at random. Its own ``shuffle=True`` before
    scikit-learn 1.8 shuffled the rows of per-group grade counts but not the group ids, so each
    group's images went where another group's counts were placed and the folds were not
    stratified (scikit-learn issues 32478 and 32540). This permutation is the one 1.8 and later
    draw for ``shuffle=True, random_state=seed``, so with ``shuffle=False`` every release gives
    the folds those fixed releases give.
    """
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.arange(int(inverse.max()) + 1)
    np.random.RandomState(seed).shuffle(order)  # position j of the visit order holds group order[j]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse.reshape(-1)]


def _test_parts(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[np.ndarray]:
    if groups is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        split = splitter.split(np.zeros(len(labels)), labels)
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=False)  # shuffled by _shuffled_groups
        split = splitter.split(np.zeros(len(labels)), labels, _shuffled_groups(groups, seed))
    with warnings.catch_warnings():
        # A grade with fewer units than folds is in some folds' test parts only: fold_warnings says which.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [np.sort(test) for _, test in split]


def assign_folds(labels: np.ndarray, groups: np.ndarray | None = None, *, folds: int = 5,
                 val_fraction: float = 0.1, seed: int = 0) -> list[Fold]:
    """Stratified (and grouped) k-fold parts of a labelled table.

    Args:
        labels: integer grades, shape (N,).
        groups: optional patient id per row, shape (N,); a group never straddles two parts.
        folds: number of folds k >= 2; each row is in exactly one fold's test part.
        val_fraction: share of each grade's non-test units that go to the fold's val part
            (0 <= f < 1).
        seed: the same inputs and seed always give the same folds.

    Returns:
        ``folds`` :class:`Fold` objects in order.

    Raises:
        OdmaugError: k < 2, more folds than units (images or groups), or a val part that would be
            empty although ``val_fraction`` > 0.
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = None if groups is None else np.asarray(groups)
    units = len(labels) if groups is None else len(np.unique(groups))
    if folds < 2:
        raise OdmaugError(f"cross-validation needs at least 2 folds (got {folds})")
    if units < folds:
        kind = "patient groups" if groups is not None else "images"
        raise OdmaugError(f"{folds} folds need at least {folds} {kind}; the table has {units}")
    out = []
    for index, test in enumerate(_test_parts(labels, groups, folds, seed)):
        rest = np.setdiff1d(np.arange(len(labels)), test)
        rest_groups = None if groups is None else groups[rest]
        names = assign_splits(labels[rest], rest_groups, val_fraction=val_fraction, test_fraction=0.0,
                              seed=seed + index)
        out.append(Fold(index, np.sort(rest[names == "train"]), np.sort(rest[names == "val"]), test))
    return out


def fold_warnings(labels: np.ndarray, folds: list[Fold]) -> list[str]:
    """One line per grade missing from some folds' test parts (fewer units of it than folds)."""
    labels = np.asarray(labels)
    lines = []
    for grade in np.unique(labels):
        missing = [f.index for f in folds if not (labels[f.test] == grade).any()]
        if missing:
            shown = ", ".join(str(i) for i in missing)
            lines.append(f"grade {grade} has {int((labels == grade).sum())} images: "
                         f"the test part of fold {shown} has none")
    return lines


def check_no_leakage(training_paths, test_paths, what: str = "generator") -> None:
    """Raise when a path of a fold's test part is among the images a model of that fold trained on.

    Raises:
        OdmaugError: naming the first shared image and how many are shared.
    """
    shared = sorted(set(map(str, training_paths)) & set(map(str, test_paths)))
    if shared:
        raise OdmaugError(f"{len(shared)} test image(s) are in the {what}'s training set, e.g. {shared[0]}")
