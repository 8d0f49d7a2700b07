"""Every classification metric equals scikit-learn's; summaries match scipy's t interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_score,
    recall_score,
)

from odmaug.errors import OdmaugError
from odmaug.metrics import classification_metrics, summarize_runs


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 7))
    n = int(rng.integers(20, 300))
    y_true = rng.integers(0, c, n)
    y_pred = np.clip(y_true + rng.integers(-2, 3, n), 0, c - 1)
    noise = rng.random(n) < 0.3  # some predictions fully random, some grades possibly never predicted
    y_pred[noise] = rng.integers(0, c, int(noise.sum()))
    m = classification_metrics(y_true, y_pred, c)
    labels = list(range(c))
    assert m["n"] == n
    assert m["qwk"] == pytest.approx(cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=labels))
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred))
    assert m["confusion"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    prec = precision_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    rec = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    f1 = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    for g, row in enumerate(m["per_grade"]):
        assert row["grade"] == g
        assert row["support"] == int((y_true == g).sum())
        assert row["predicted"] == int((y_pred == g).sum())
        for key, ref in (("precision", prec[g]), ("recall", rec[g]), ("f1", f1[g])):
            if np.isnan(ref):
                assert row[key] is None
            else:
                assert row[key] == pytest.approx(ref)


def test_fully_random_predictions_equal_sklearn():
    rng = np.random.default_rng(42)
    y_true, y_pred = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    m = classification_metrics(y_true, y_pred, 5)
    assert m["qwk"] == pytest.approx(cohen_kappa_score(y_true, y_pred, weights="quadratic"))
    assert abs(m["qwk"]) < 0.15  # chance level


def test_absent_grades_keep_rows_and_perfect_cases():
    m = classification_metrics([0, 0, 2, 2], [0, 0, 2, 2], 5)
    assert m["qwk"] == 1.0 and m["accuracy"] == 1.0 and m["mae"] == 0.0
    assert len(m["per_grade"]) == 5 and m["per_grade"][4]["support"] == 0
    assert m["per_grade"][4]["recall"] is None and m["per_grade"][4]["precision"] is None
    assert np.array(m["confusion"]).shape == (5, 5)
    # One grade on both sides: sklearn gives NaN; identical grades are perfect agreement.
    assert classification_metrics([3, 3, 3], [3, 3, 3], 5)["qwk"] == 1.0
    assert classification_metrics([3, 3, 3], [1, 1, 1], 5)["qwk"] == 0.0
    # Ordinal: predicting one grade off is better than four off.
    near = classification_metrics([0, 1, 2, 3, 4], [1, 1, 2, 3, 4], 5)["qwk"]
    far = classification_metrics([0, 1, 2, 3, 4], [4, 1, 2, 3, 4], 5)["qwk"]
    assert near > far


def test_bad_inputs():
    with pytest.raises(OdmaugError, match="empty"):
        classification_metrics([], [], 5)
    with pytest.raises(OdmaugError, match="predictions"):
        classification_metrics([0, 1], [0], 5)
    with pytest.raises(OdmaugError, match="grade 5 is outside 0..4"):
        classification_metrics([0, 5], [0, 1], 5)
    with pytest.raises(OdmaugError, match="integers"):
        classification_metrics([0.5, 1], [0, 1], 5)


def test_summarize_runs_matches_scipy_t_interval():
    values = [0.41, 0.47, 0.44, 0.50]
    s = summarize_runs(values)
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(values), scale=stats.sem(values))
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["std"] == pytest.approx(np.std(values, ddof=1))
    assert s["ci_low"] == pytest.approx(low) and s["ci_high"] == pytest.approx(high)
    one = summarize_runs([0.3])
    assert one["mean"] == 0.3 and one["std"] is None and one["ci_low"] is None
    assert summarize_runs([])["n"] == 0
