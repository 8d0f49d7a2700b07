"""Ordinal classification metrics: how severity grading is judged.

Quadratic weighted kappa (QWK) first (scikit-learn's ``cohen_kappa_score(weights="quadratic")``),
then accuracy, macro-F1, balanced accuracy, mean absolute grade error, per-grade
precision/recall/F1 and the confusion matrix. Every figure is scikit-learn's where one exists;
grades absent from both ``y_true`` and ``y_pred`` still get a row (with zeros), so tables from
different sets line up.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from odmaug.errors import OdmaugError

SUMMARY_KEYS = ("qwk", "accuracy", "macro_f1", "balanced_accuracy", "mae")
"""The scalar metrics, in display order."""


def _as_labels(values: Sequence[int] | np.ndarray, num_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise OdmaugError(f"{what}: expected a 1-D sequence of grades, got shape {arr.shape}")
    if arr.size and (not np.issubdtype(arr.dtype, np.integer)):
        if not np.all(np.mod(arr, 1) == 0):
            raise OdmaugError(f"{what}: grades must be integers")
        arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise OdmaugError(f"{what}: grade {int(bad[0])} is outside 0..{num_classes - 1}")
    return arr.astype(np.int64)


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """QWK via scikit-learn; 1.0 when both sides hold one and the same grade (perfect, no variance).

    scikit-learn returns NaN when the expected disagreement is zero (a single grade on both sides);
    agreement is then perfect if the grades are equal, otherwise kappa is 0 by convention.
    """
    from sklearn.metrics import cohen_kappa_score

    labels = list(range(num_classes))
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # the undefined case is handled below
        kappa = cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic")
    if math.isnan(kappa):
        return 1.0 if np.array_equal(y_true, y_pred) else 0.0
    return float(kappa)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix [C, C]: rows are true grades, columns predicted grades."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def per_grade_table(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> pd.DataFrame:
    """One row per grade: support (true count), predicted count, precision, recall, F1.

    Grades with no true images have recall NaN; grades never predicted have precision NaN (shown
    as "-"), so an empty cell is never mistaken for a measured zero.
    """
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=np.nan
    )
    predicted = np.bincount(y_pred, minlength=num_classes)
    return pd.DataFrame(
        {
            "grade": labels,
            "support": support.astype(int),
            "predicted": predicted.astype(int),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    )


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Every classification figure for integer grades 0..C-1.

    Args:
        y_true: true grades [N].
        y_pred: predicted grades [N].
        num_classes: number of grades C.

    Returns:
        ``{"n", "qwk", "accuracy", "macro_f1", "balanced_accuracy", "mae", "per_grade": [{grade,
        support, predicted, precision, recall, f1}, ...], "confusion": [[...C] * C]}``; macro-F1
        and balanced accuracy average over the grades present in ``y_true`` or ``y_pred``
        (scikit-learn's convention); JSON-serialisable (NaN becomes None).

    Raises:
        OdmaugError: empty input, length mismatch, or a grade outside 0..C-1.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    y_true = _as_labels(y_true, num_classes, "true grades")
    y_pred = _as_labels(y_pred, num_classes, "predicted grades")
    if y_true.size == 0:
        raise OdmaugError("no images to evaluate (empty set)")
    if y_true.shape != y_pred.shape:
        raise OdmaugError(f"{y_true.size} true grades but {y_pred.size} predictions")
    with warnings.catch_warnings():
        # balanced accuracy warns when a predicted grade is absent from y_true; the value is still right.
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
        macro_f1 = float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    table = per_grade_table(y_true, y_pred, num_classes)
    return {
        "n": int(y_true.size),
        "qwk": quadratic_weighted_kappa(y_true, y_pred, num_classes),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": macro_f1,
        "balanced_accuracy": balanced,
        "mae": float(np.abs(y_true - y_pred).mean()),
        "per_grade": [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.astype(object).to_dict("records")
        ],
        "confusion": confusion(y_true, y_pred, num_classes).tolist(),
    }


def summarize_runs(values: Sequence[float], confidence: float = 0.95, unit: str = "seed") -> dict[str, Any]:
    """Mean, sample standard deviation and a t-distribution confidence interval of ``values``.

    Args:
        values: one figure per run (None entries are dropped: a figure that run does not have).
        confidence: coverage of the interval of the mean.
        unit: what one value is (``seed``), for the reason text.

    Returns:
        ``{"n", "mean", "std", "ci_low", "ci_high", "spread_omitted"}``. Where a spread would be
        degenerate (no value, one value, or all values equal: a zero-width interval is no
        interval) std and the interval are None and ``spread_omitted`` says why
        (:func:`odmaug.metrics.spread.runs_spread_omitted`); otherwise it is None.
    """
    from scipy import stats

    from odmaug.metrics.spread import runs_spread_omitted

    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = int(arr.size)
    omitted = runs_spread_omitted(arr.tolist(), unit)
    mean = float(arr.mean()) if n else None
    if omitted:
        return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None, "spread_omitted": omitted}
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half, "spread_omitted": None}
