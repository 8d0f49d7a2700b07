"""Deterministic stratified (and grouped) train/val/test splits for sources that have none.

Each grade is split on its own: its units (images, or patient groups when ``groups`` is given) go
to test, val and train by rounding ``fraction x count`` so that the per-split totals add up
(largest deficit first), then a seeded permutation of the grade's units picks which ones. Unlike a
whole-set :class:`sklearn.model_selection.StratifiedShuffleSplit`, this never needs two units per
grade, so skewed or tiny sets stay stratified; for ample counts the per-grade sizes agree with it
within one unit. Small grades keep training data first:

* a grade with 1 unit is in train only;
* a grade with 2 units gives 1 to train and 1 to a held-out split (val/test, fraction > 0): one
  still empty, else the one furthest below its share of the whole set;
* a grade with 3 or more units has at least 1 in train and in each split whose fraction is > 0.

A grouped unit (patient) whose images have several grades is stratified by its highest grade, the
worse eye that sets a patient's clinical grade; it also keeps the rare severe grades stratified.
"""

from __future__ import annotations

import numpy as np

from odmaug.errors import OdmaugError

SPLITS = ("test", "val", "train")
"""Split names in allocation order: ties in rounding go to test, then val, then train."""


def _minimums(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Fewest units each split (``SPLITS`` order) gets from a grade of ``n != 2`` units."""
    if n >= 3:
        return [1 if f > 0 else 0 for f in fractions[:2]] + [1]
    return [0, 0, n]


def _apportion(n: int, fractions: tuple[float, float, float], minimums: list[int], behind: list[float]) -> list[int]:
    """Units per split (``SPLITS`` order) summing to ``n``, each at least its minimum.

    Every unit above the minimums goes to the split furthest below its share ``n x fraction``, so
    a count is always below share + 1, and above share - 1 unless some minimum exceeds its share.
    Ties (common: 8 x 0.2 and 8 x 0.7 both leave 0.6) go to the split furthest behind over the
    grades placed so far (``behind``: share minus units, per split), so whole-set totals stay near
    their fractions too; then to test, val, train in that order.
    """
    shares = [n * f for f in fractions]
    counts = list(minimums)
    left = n - sum(counts)
    # Bulk step for large grades: floor of each positive deficit, when they fit (they do unless
    # the minimums overshoot, and then the grade is small and the loop below is short).
    bulk = [max(int(s - c), 0) for s, c in zip(shares, counts)]
    if sum(bulk) <= left:
        counts = [c + b for c, b in zip(counts, bulk)]
        left -= sum(bulk)
    for _ in range(left):
        # Rounded, so that float noise (1 - 0.2 - 0.1 = 0.7000000000000001) cannot break a tie.
        keys = [(round(s - c, 9), round(h + s - c, 9)) for s, c, h in zip(shares, counts, behind)]
        counts[keys.index(max(keys))] += 1
    return counts


def _allocate(size_of: dict[int, int], fractions: tuple[float, float, float]) -> dict[int, list[int]]:
    """Units per split (``SPLITS`` order) for each grade, from its unit count ``size_of[grade]``.

    A 2-unit grade keeps one unit in train; its other unit goes, after all other grades, to an
    asked held-out split that is still empty, else to the one furthest behind its share of the
    whole set, so that sets of tiny grades fill both val and test instead of always test.
    """
    behind = [0.0, 0.0, 0.0]
    counts = {}
    for grade, n in sorted(size_of.items()):
        if n == 2:
            counts[grade] = [0, 0, 1]
        else:
            counts[grade] = _apportion(n, fractions, _minimums(n, fractions), behind)
        behind = [h + n * f - c for h, f, c in zip(behind, fractions, counts[grade])]
    asked = [i for i in (0, 1) if fractions[i] > 0]
    for grade in sorted(g for g, n in size_of.items() if n == 2):
        # An asked split that is still empty comes first: a set must not fail for want of val
        # while the pairs all went to test.
        empty = {i for i in asked if not any(c[i] for c in counts.values())}
        split = max(asked, key=lambda i: (i in empty, round(behind[i], 9), -i)) if asked else 2
        counts[grade][split] += 1
        behind[split] -= 1
    return counts


def _units(labels: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Unit index per row (shape (N,)) and stratification grade per unit (shape (U,)).

    Without groups every image is a unit; with groups a unit is a group, graded by its highest
    image grade.
    """
    if groups is None:
        return np.arange(len(labels)), labels
    _, unit_of_row = np.unique(np.asarray(groups), return_inverse=True)
    unit_grade = np.full(unit_of_row.max() + 1, -1, dtype=np.int64)
    np.maximum.at(unit_grade, unit_of_row, labels)
    return unit_of_row, unit_grade


def _place(unit_grade: np.ndarray, counts: dict[int, list[int]], seed: int) -> np.ndarray:
    """Split index (into ``SPLITS``) per unit: a seeded permutation of each grade's units.

    Each grade draws from its own stream (seed, grade), so one grade's count does not reshuffle
    another grade's units.
    """
    where = np.empty(len(unit_grade), dtype=np.int64)
    for grade, (n_test, n_val, n_train) in counts.items():
        members = np.flatnonzero(unit_grade == grade)
        order = np.random.default_rng([seed % 2**63, int(grade)]).permutation(members)
        where[order] = np.repeat([0, 1, 2], [n_test, n_val, n_train])
    return where


def _train_every_grade(labels: np.ndarray, unit_of_row: np.ndarray, unit_grade: np.ndarray, where: np.ndarray) -> None:
    """Bring into train a group for each image grade that train lacks (grouped, mixed grades only).

    A grade seen only as the lesser eye of patients placed in val/test would be missing from
    train. Swap such a patient with a train patient of the same stratification grade (per-split
    counts stay as allocated) whose images train does not need; failing that, move it to train.
    """
    if set(labels[where[unit_of_row] == 2].tolist()) == set(labels.tolist()):
        return  # the usual case, and always so when no group mixes grades
    grades_of: list[set[int]] = [set() for _ in range(len(unit_grade))]
    for u, g in np.unique(np.stack([unit_of_row, labels]), axis=1).T.tolist():
        grades_of[u].add(g)
    for grade in sorted(set(labels.tolist())):
        carriers = np.zeros(int(labels.max()) + 1, dtype=np.int64)
        for u in np.flatnonzero(where == 2):
            carriers[list(grades_of[u])] += 1
        if carriers[grade]:
            continue
        held = [u for u in np.flatnonzero(where != 2) if grade in grades_of[u]]
        for x in held:
            spare = [
                y for y in np.flatnonzero((where == 2) & (unit_grade == unit_grade[x]))
                if all(carriers[g] > 1 or g in grades_of[x] for g in grades_of[y])
            ]
            if spare:
                where[spare[0]], where[x] = where[x], 2
                break
        else:
            where[held[0]] = 2


def _require_filled(where: np.ndarray, fractions: tuple[float, float, float], grouped: bool) -> None:
    """Raise OdmaugError when a split with a fraction > 0 got no unit at all."""
    empty = [SPLITS[i] for i in (1, 0) if fractions[i] > 0 and not (where == i).any()]
    if not empty:
        return
    unit = "patient groups" if grouped else "images"
    keys = " and ".join(f"data.{s}_fraction" for s in empty)
    asked = f"a {empty[0]} split" if len(empty) == 1 else "val and test splits"
    raise OdmaugError(
        f"{len(where)} {unit} are too few for {asked} while every grade keeps a "
        f"training image: add images (a grade with 3 or more {unit} fills every split), or set {keys} to 0"
    )


def assign_splits(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Split names (``train``/``val``/``test``) per row, stratified by grade.

    Args:
        labels: integer grades, shape (N,).
        groups: optional patient/group id per row, shape (N,); all rows of a group land in the same
            split (two eyes of one patient never straddle splits).
        val_fraction, test_fraction: shares of each grade's units for val and test; ``0 <= f`` and
            ``val_fraction + test_fraction < 1``.
        seed: the same inputs and seed always give the same assignment.

    Returns:
        Object array of shape (N,). Every grade with an image has one in train; see the module
        docstring for how small grades are placed and :func:`split_warnings` for what is missing.

    Raises:
        OdmaugError: a split with a fraction > 0 would get no image (too few images or groups).
    """
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.full(len(labels), "train", dtype=object)
    if len(labels) == 0:
        return splits
    fractions = (float(test_fraction), float(val_fraction), 1.0 - test_fraction - val_fraction)
    unit_of_row, unit_grade = _units(labels, groups)
    grades, sizes = np.unique(unit_grade, return_counts=True)
    size_of = {int(g): int(n) for g, n in zip(grades, sizes)}
    counts = _allocate(size_of, fractions)
    where = _place(unit_grade, counts, seed)
    if groups is not None:
        _train_every_grade(labels, unit_of_row, unit_grade, where)
    _require_filled(where, fractions, groups is not None)
    return np.array(SPLITS, dtype=object)[where[unit_of_row]]


def split_warnings(
    labels: np.ndarray,
    splits: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    groups: np.ndarray | None = None,
) -> list[str]:
    """One line per grade that a split asked for (fraction > 0) has no image of.

    Args:
        labels, splits, groups: per-row grades, split names (from :func:`assign_splits`) and
            optional group ids, each shape (N,).

    Returns:
        e.g. ``grade 4 has 1 image: it is in train only; val and test have no grade-4 image``.
    """
    labels, splits = np.asarray(labels), np.asarray(splits)
    asked = [s for s, f in (("val", val_fraction), ("test", test_fraction)) if f > 0]
    lines = []
    for grade in np.unique(labels):
        rows = labels == grade
        missing = [s for s in asked if not (rows & (splits == s)).any()]
        if not missing:
            continue
        n = int(rows.sum())
        held = f"{n} image{'s' if n != 1 else ''}"
        if groups is not None:
            n_groups = len(np.unique(np.asarray(groups)[rows]))
            held += f" in {n_groups} group{'s' if n_groups != 1 else ''}"
        only = "it is in train only; " if set(splits[rows]) == {"train"} else ""
        verb = "has" if len(missing) == 1 else "have"
        lines.append(f"grade {grade} has {held}: {only}{' and '.join(missing)} {verb} no grade-{grade} image")
    return lines
