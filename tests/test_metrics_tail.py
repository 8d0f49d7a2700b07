"""FID resting on a few real images is flagged (odmaug.metrics.tail): the share of the real
covariance's trace held by the farthest 2% of real images, checked against numpy's covariance."""

import numpy as np
import pytest

from odmaug.metrics.generative import metrics_from_features
from odmaug.metrics.generative_table import generative_table
from odmaug.config import MetricsConfig
from odmaug.metrics.tail import TAIL_FRACTION, real_tail_share, tail_dominated


def _with_far_cluster(rng, n: int = 1000, d: int = 32) -> np.ndarray:
    """Gaussian features whose first 1.5% of rows are shifted 12 standard deviations along every
    axis: about 70% of the trace, as the borderless RetinaMNIST photographs under a grade
    classifier's features."""
    x = rng.standard_normal((n, d))
    x[: int(0.015 * n)] += 12.0
    return x


def test_tail_share_is_the_farthest_rows_share_of_numpys_covariance_trace():
    x = _with_far_cluster(np.random.default_rng(0))
    distances = ((x - x.mean(0)) ** 2).sum(1)
    k = int(np.ceil(TAIL_FRACTION * len(x)))
    expected = np.sort(distances)[-k:].sum() / ((len(x) - 1) * np.trace(np.cov(x.T)))
    assert real_tail_share(x) == pytest.approx(expected, rel=1e-12)
    assert real_tail_share(x, fraction=1.0) == pytest.approx(1.0)
    assert real_tail_share(np.ones((5, 3))) == 0.0


def test_gaussian_features_are_not_flagged_a_far_cluster_is():
    rng = np.random.default_rng(1)
    plain = rng.standard_normal((1000, 32))
    assert real_tail_share(plain) < 0.06  # about the fraction itself: no few images hold the spread
    assert real_tail_share(_with_far_cluster(rng)) > 0.6


def test_fid_turns_on_a_few_far_images_and_the_row_says_so():
    rng = np.random.default_rng(2)
    real = _with_far_cluster(rng)
    labels = np.zeros(len(real), dtype=int)
    bulk_only = rng.standard_normal((200, 32))
    with_three = bulk_only.copy()
    with_three[:3] += 12.0  # 1.5% far, as in the real set
    rows = [metrics_from_features(real, labels, g, np.zeros(200, int), 1)["overall"] for g in (bulk_only, with_three)]
    assert rows[0]["fid"] > 3 * rows[1]["fid"]  # three images of 200 move FID by more than 3x
    assert all(r["fid_tail_dominated"] and r["real_tail_share"] > 0.5 for r in rows)
    plain = metrics_from_features(rng.standard_normal((1000, 32)), labels, bulk_only, np.zeros(200, int), 1)
    assert plain["overall"]["fid_tail_dominated"] is False


def test_the_table_marks_a_tail_dominated_fid_and_explains_the_mark():
    from rich.console import Console

    rng = np.random.default_rng(3)
    real = _with_far_cluster(rng, n=400)
    out = metrics_from_features(real, np.zeros(400, int), rng.standard_normal((100, 32)), np.zeros(100, int), 1)
    out |= {"settings": {}, "feature_dim": 32, "generated": {"name": "g"}, "real": {"name": "r"}, "image_size": 32}
    console = Console(width=200, record=True)
    console.print(generative_table(out))
    text = console.export_text()
    assert "*‡" in text and "FID rests on a few real images" in text


def test_a_set_too_small_for_a_2_percent_tail_is_not_marked():
    rng = np.random.default_rng(4)
    for n in (2, 3, 49):
        real = rng.standard_normal((n, 8))
        row = metrics_from_features(real, np.zeros(n, int), rng.standard_normal((n, 8)), np.zeros(n, int), 1,
                                    MetricsConfig(min_per_grade=2, nearest_k=1))["overall"]
        assert row["fid_tail_dominated"] is False and row["real_tail_share"] is not None
    assert tail_dominated(0.9, 50) and not tail_dominated(0.9, 49) and not tail_dominated(0.4, 1000)


def test_bad_features_are_refused():
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        real_tail_share(np.zeros(4))
    with pytest.raises(ValueError, match="fraction"):
        real_tail_share(np.zeros((4, 2)), fraction=0.0)
