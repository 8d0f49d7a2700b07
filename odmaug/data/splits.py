"""Deterministic stratified (and grouped) train/val/test splits for sources that have none."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit


def _holdout(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified holdout of about ``fraction`` of the rows."""
    n = len(labels)
    mask = np.zeros(n, dtype=bool)
    if fraction <= 0 or n < 2:
        return mask
    if groups is None:
        counts = np.bincount(labels)
        if counts[counts > 0].min() < 2:  # a grade with one image cannot be stratified
            rng = np.random.default_rng(seed)
            mask[rng.permutation(n)[: max(1, round(fraction * n))]] = True
            return mask
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        _, held = next(splitter.split(np.zeros(n), labels))
        mask[held] = True
        return mask
    # Grouped: a fold of StratifiedGroupKFold with k ~ 1/fraction keeps every group whole.
    n_groups = len(np.unique(groups))
    k = int(min(max(2, round(1 / fraction)), n_groups))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    _, held = next(splitter.split(np.zeros(n), labels, groups))
    mask[held] = True
    return mask


def assign_splits(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Split names (``train``/``val``/``test``) per row, stratified by grade.

    With ``groups``, all rows of a group land in the same split (two eyes of one patient never
    straddle splits). The same inputs and seed always give the same assignment.
    """
    labels = np.asarray(labels)
    splits = np.full(len(labels), "train", dtype=object)
    test = _holdout(labels, groups, test_fraction, seed)
    splits[test] = "test"
    rest = np.flatnonzero(~test)
    if val_fraction > 0 and len(rest) > 1:
        rest_groups = None if groups is None else np.asarray(groups)[rest]
        val = _holdout(labels[rest], rest_groups, val_fraction / (1 - test_fraction), seed + 1)
        splits[rest[val]] = "val"
    return splits
