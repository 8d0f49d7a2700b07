"""Translation fidelity metrics: grade path (scipy's Spearman), distance by strength, near copies."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from odmaug.errors import OdmaugError
from odmaug.metrics.translation import distance_by_strength, grade_path, near_copies


def test_grade_path_rho_and_monotone_share():
    targets = np.arange(5)
    predicted = np.array([[0, 1, 2, 3, 4], [0, 0, 1, 1, 2], [4, 3, 2, 1, 0], [1, 1, 1, 1, 1], [0, 2, 1, 3, 4]])
    out = grade_path(predicted, targets)
    assert out["sources"] == 5
    assert out["rho"][0] == pytest.approx(1.0) and out["rho"][2] == pytest.approx(-1.0)
    assert out["rho"][4] == pytest.approx(spearmanr(targets, predicted[4]).statistic)
    assert np.isnan(out["rho"][3])  # constant prediction: no ranking
    assert out["monotone"] == 3  # rows 0, 1 and the constant row 3 never fall
    assert out["monotone_share"] == pytest.approx(0.6)
    defined = [r for r in out["rho"] if not np.isnan(r)]
    assert out["rho_mean"] == pytest.approx(np.mean(defined))


def test_grade_path_rejects_bad_shapes():
    with pytest.raises(OdmaugError, match="shape"):
        grade_path(np.zeros((3, 4)), np.arange(5))
    with pytest.raises(OdmaugError, match="increasing"):
        grade_path(np.zeros((3, 2)), np.array([2, 1]))


def test_distance_grows_with_strength():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(60, 8))
    strengths = np.repeat([0.2, 0.5, 0.8], 20)
    out_feats = src + strengths[:, None] * rng.normal(size=(60, 8))
    out = distance_by_strength(src, out_feats, strengths)
    means = [row["mean"] for row in out["by_strength"]]
    assert [row["n"] for row in out["by_strength"]] == [20, 20, 20]
    assert means[0] < means[1] < means[2]
    assert out["rho"] > 0.7


def test_near_copies_flags_a_copied_test_image():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(200, 4)), rng.normal(size=(50, 4))
    outputs = rng.normal(size=(30, 4))
    clean = near_copies(outputs, test, train, quantile=0.01)
    assert clean["outputs"] == 30 and clean["near_copies"] <= 1
    outputs[7] = test[12] + 1e-6
    flagged = near_copies(outputs, test, train, quantile=0.01)
    assert flagged["near_copies"] >= 1 and flagged["closest"] == 12
    assert flagged["min_distance"] < 1e-5
    with pytest.raises(OdmaugError, match="quantile"):
        near_copies(outputs, test, train, quantile=1.5)
