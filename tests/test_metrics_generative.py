"""Generative metric formulas on features: FID, KID, precision/recall, per-grade splitting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

from odmaug.config import MetricsConfig
from odmaug.data.sources import synthetic_table
from odmaug.config import DataConfig
from odmaug.errors import OdmaugError
from odmaug.metrics.generative import (
    compute_generative_metrics,
    fid_from_features,
    kid_from_features,
    metrics_from_features,
    precision_recall,
)


def gaussian(rng: np.random.Generator, n: int, mean, cov) -> np.ndarray:
    return rng.multivariate_normal(np.asarray(mean, float), np.asarray(cov, float), size=n)


def torch_fidelity_fid(x: np.ndarray, y: np.ndarray) -> float:
    stats = [fid_features_to_statistics(torch.as_tensor(f, dtype=torch.float64)) for f in (x, y)]
    return fid_statistics_to_metric(stats[0], stats[1], False)["frechet_inception_distance"]


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 24))
    assert abs(fid_from_features(x, x)) < 1e-8
    assert fid_from_features(x, x + 1.0) == pytest.approx(24.0, rel=1e-9)  # pure mean shift: |mu1 - mu2|^2


@pytest.mark.parametrize("n1,n2,dim", [(500, 300, 16), (40, 60, 128)])  # more and fewer samples than dimensions
def test_fid_equals_torch_fidelity(n1, n2, dim):
    rng = np.random.default_rng(n1)
    x = rng.normal(size=(n1, dim)) @ rng.normal(size=(dim, dim)) / 4
    y = rng.normal(0.3, 1.2, size=(n2, dim))
    assert fid_from_features(x, y) == pytest.approx(torch_fidelity_fid(x, y), rel=1e-6, abs=1e-6)


def test_fid_between_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.array([0.0, 0.0, 0.0]), np.array([1.0, -0.5, 2.0])
    s1 = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.2], [0.0, 0.2, 0.5]])
    s2 = np.array([[0.5, 0.0, 0.1], [0.0, 1.0, 0.0], [0.1, 0.0, 3.0]])
    closed = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2)
                   - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
    fid = fid_from_features(gaussian(rng, 40000, mu1, s1), gaussian(rng, 40000, mu2, s2))
    assert fid == pytest.approx(closed, rel=0.03)


def test_fid_rejects_mismatched_features():
    with pytest.raises(OdmaugError, match="equal D"):
        fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))


def test_kid_near_zero_for_same_distribution_and_positive_for_shifted():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(400, 32))
    same = rng.normal(size=(400, 32))
    shifted = rng.normal(0.5, 1.0, size=(400, 32))
    a = kid_from_features(real, same, subsets=20, subset_size=200, seed=0)
    b = kid_from_features(real, shifted, subsets=20, subset_size=200, seed=0)
    assert abs(a["kid_mean"]) < 3 * a["kid_std"] + 1e-3
    assert b["kid_mean"] > 10 * max(a["kid_mean"], 0) and b["kid_mean"] > 5 * b["kid_std"]
    # Same seed, same subsets; the subset size is capped at the smaller set.
    assert kid_from_features(real, shifted, 20, 200, 0) == b
    assert kid_from_features(real, shifted[:50], 5, 1000, 0)["kid_subset_size"] == 50


def test_precision_recall_when_the_generator_covers_half_the_modes():
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])  # 4 far-apart modes
    real = np.concatenate([c + rng.normal(size=(200, 2)) for c in centres])
    generated = np.concatenate([c + rng.normal(size=(200, 2)) for c in centres[:2]])  # modes 0 and 1 only
    pr = precision_recall(real, generated, k=3)
    assert pr["precision"] > 0.9  # every generated sample looks real
    assert pr["recall"] == pytest.approx(0.5, abs=0.05)  # half of the real modes are covered
    swapped = precision_recall(generated, real, k=3)  # the roles matter (torch-fidelity 0.4.0 fixed a swap)
    assert swapped["recall"] > 0.9 and swapped["precision"] == pytest.approx(0.5, abs=0.05)


def test_per_grade_rows_split_by_label_and_flag_small_sets():
    rng = np.random.default_rng(4)
    real_y = np.repeat([0, 1, 2], [60, 60, 5])
    gen_y = np.repeat([0, 1, 2], [50, 50, 50])
    real = rng.normal(size=(len(real_y), 6))
    gen = rng.normal(size=(len(gen_y), 6))
    gen[gen_y == 1] += 3.0  # only grade 1 is off
    cfg = MetricsConfig(min_per_grade=10, kid_subsets=10, small_set=100)
    out = metrics_from_features(real, real_y, gen, gen_y, num_classes=4, cfg=cfg, extractor="toy")
    rows = {r["grade"]: r for r in out["per_grade"]}
    assert [r["grade"] for r in out["per_grade"]] == [0, 1, 2, 3]
    assert (rows[0]["n_real"], rows[0]["n_generated"]) == (60, 50)
    assert rows[1]["fid"] > 10 * rows[0]["fid"]
    assert rows[1]["fid"] == pytest.approx(fid_from_features(real[real_y == 1], gen[gen_y == 1]))
    assert rows[2]["too_few"] and rows[2]["fid"] is None and rows[2]["n_real"] == 5  # 5 real < 10
    assert rows[3]["too_few"] and rows[3]["n_real"] == rows[3]["n_generated"] == 0
    assert out["overall"]["n_real"] == 125 and out["overall"]["fid_small_set"] is False
    assert rows[0]["fid_small_set"] is True  # 50 < small_set
    assert all(r["extractor"] == "toy" for r in [out["overall"], *out["per_grade"]])
    # overall_rows: the overall row from a subset, every per-grade row unchanged
    rows_used = np.arange(0, len(gen_y), 3)
    subset = metrics_from_features(real, real_y, gen, gen_y, 4, cfg, extractor="toy", overall_rows=rows_used)
    assert subset["per_grade"] == out["per_grade"]
    assert subset["overall"]["n_generated"] == len(rows_used)
    assert subset["overall"]["fid"] == pytest.approx(fid_from_features(real, gen[rows_used]))


class MeanColour:
    """A tiny extractor for tests: per-channel mean and std of each image [B, 6]."""

    name = "mean-colour"
    identity = "mean-colour/v1"
    image_size = None
    dim = 6

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0  # [B, 3, H, W]
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1)


def test_compute_generative_metrics_on_images(tmp_path):
    table = synthetic_table(DataConfig(source="synthetic", image_size=16))
    real, generated = table.split("train"), table.split("test")
    cfg = MetricsConfig(min_per_grade=4, kid_subsets=5)
    out = compute_generative_metrics(real, generated, MeanColour(), cfg, str(tmp_path), image_size=16, seed=1)
    assert out["real"]["n"] == len(real) and out["generated"]["n"] == len(generated)
    assert [r["n_real"] for r in out["per_grade"]] == real.counts().tolist()
    assert [r["n_generated"] for r in out["per_grade"]] == generated.counts().tolist()
    assert out["extractor"] == "mean-colour" and out["cache"]["cache"] == "miss"
    again = compute_generative_metrics(real, generated, MeanColour(), cfg, str(tmp_path), image_size=16, seed=1)
    assert again["cache"]["cache"] == "hit" and again["overall"] == out["overall"]
    # Against itself: FID ~0, precision and recall 1.
    self_out = compute_generative_metrics(real, real, MeanColour(), cfg, str(tmp_path), image_size=16)
    assert abs(self_out["overall"]["fid"]) < 1e-6
    assert self_out["overall"]["precision"] == self_out["overall"]["recall"] == 1.0
    # Without a size, the first real image's size (the synthetic set's native 64 px) is used.
    assert compute_generative_metrics(real, generated, MeanColour(), cfg, str(tmp_path))["image_size"] == 64
    with pytest.raises(OdmaugError, match="no images"):
        compute_generative_metrics(real, table.split("val").split("test"), MeanColour(), cfg, str(tmp_path))
