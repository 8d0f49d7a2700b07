"""Fidelity of grade translation: does the grade move, how far does the image move, is it a copy?

Three checks of images translated from real sources (SDEdit, Meng et al. 2022):

* **grade path** — a real-data classifier's predicted grade of one source translated to every
  target grade should rise with the target grade: Spearman's rho (scipy) per source, and the share
  of *monotone* strips (predictions never fall as the target grade rises);
* **distance against strength** — the feature distance from each output to its source should grow
  with the strength (t0 / T): mean and SD per strength, and Spearman's rho over all pairs;
* **near copies** — no output should be a near-copy of a test image: an output counts as one when
  its nearest test image (in the domain feature space) is closer than the ``quantile`` of the real
  test images' own nearest-train distances (the spacing of independent real images), nearest
  neighbours from scikit-learn.

All inputs are arrays: the caller translates, classifies and embeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.neighbors import NearestNeighbors

from odmaug.errors import OdmaugError


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; NaN where either side is constant (no ranking to correlate)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def grade_path(predicted: np.ndarray, target_grades: np.ndarray) -> dict[str, Any]:
    """Per-source Spearman's rho between target and predicted grade, and the monotone share.

    Args:
        predicted: predicted grades (or expected grades), shape (S, G): S sources x G targets.
        target_grades: the G target grades in the columns' order, strictly increasing.

    Returns:
        ``sources`` (S), ``rho`` (list of S; NaN where a strip's prediction never changes),
        ``rho_mean`` and ``rho_median`` over the ``rho_n`` defined values (NaN if none), ``monotone``
        (count of strips whose prediction never falls) and ``monotone_share``, and ``flat`` (count of
        strips whose prediction never changes: monotone, but without moving at all; a classifier
        that always answers one grade makes every strip flat, so read the share beside it).

    Raises:
        OdmaugError: shapes disagree, fewer than 2 targets, or targets not increasing.
    """
    predicted = np.asarray(predicted, dtype=float)
    target_grades = np.asarray(target_grades, dtype=float)
    if predicted.ndim != 2 or predicted.shape[1] != len(target_grades) or len(target_grades) < 2:
        raise OdmaugError(f"grade path needs predictions of shape (sources, {len(target_grades)} >= 2 grades); "
                          f"got {predicted.shape}")
    if np.any(np.diff(target_grades) <= 0):
        raise OdmaugError("grade path: target grades must be strictly increasing")
    rhos = np.array([_rho(target_grades, row) for row in predicted])
    monotone = int(np.all(np.diff(predicted, axis=1) >= 0, axis=1).sum())
    defined = rhos[~np.isnan(rhos)]
    return {
        "sources": len(predicted),
        "rho": rhos.tolist(),
        "rho_n": len(defined),
        "rho_mean": float(defined.mean()) if len(defined) else float("nan"),
        "rho_median": float(np.median(defined)) if len(defined) else float("nan"),
        "monotone": monotone,
        "monotone_share": monotone / len(predicted) if len(predicted) else float("nan"),
        "flat": int((np.ptp(predicted, axis=1) == 0).sum()) if predicted.size else 0,
    }


def distance_by_strength(source_features: np.ndarray, output_features: np.ndarray,
                         strengths: np.ndarray) -> dict[str, Any]:
    """Euclidean feature distance from each output to its source, by strength.

    Args:
        source_features, output_features: shape (N, D), row i of one is the source of row i of the other.
        strengths: shape (N,), each output's t0 / T.

    Returns:
        ``by_strength``: list of {strength, n, mean, sd} in increasing strength; ``rho``: Spearman's
        rho of distance with strength over all N pairs (NaN with one strength).
    """
    source_features = np.asarray(source_features, dtype=float)
    output_features = np.asarray(output_features, dtype=float)
    strengths = np.asarray(strengths, dtype=float)
    if source_features.shape != output_features.shape or len(strengths) != len(source_features):
        raise OdmaugError("distance by strength: sources, outputs and strengths must have the same length")
    distance = np.linalg.norm(output_features - source_features, axis=1)
    rows = []
    for value in np.unique(strengths):
        d = distance[strengths == value]
        rows.append({"strength": float(value), "n": len(d), "mean": float(d.mean()),
                     "sd": float(d.std(ddof=1)) if len(d) > 1 else float("nan")})
    return {"by_strength": rows, "rho": _rho(strengths, distance)}


def _nearest(query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = NearestNeighbors(n_neighbors=1).fit(reference)
    distance, which = index.kneighbors(query)
    return distance[:, 0], which[:, 0]


def near_copies(output_features: np.ndarray, test_features: np.ndarray, train_features: np.ndarray,
                quantile: float = 0.01) -> dict[str, Any]:
    """Outputs closer to a test image than real images are to each other.

    Args:
        output_features: (N, D) features of the translated images.
        test_features: (M, D) features of the test split's real images.
        train_features: (K, D) features of the training split's real images.
        quantile: the threshold is this quantile of the test images' distances to their nearest
            training image (the spacing of independent real images); 0 < quantile < 1.

    Returns:
        ``outputs`` N, ``threshold``, ``near_copies`` (count below it), ``share``,
        ``min_distance`` and ``closest`` (index of the test image nearest to any output).
    """
    if not 0.0 < quantile < 1.0:
        raise OdmaugError(f"near-copy quantile must be in (0, 1) (got {quantile})")
    if min(len(output_features), len(test_features), len(train_features)) == 0:
        raise OdmaugError("near-copy check needs outputs, test images and training images")
    spacing, _ = _nearest(np.asarray(test_features, float), np.asarray(train_features, float))
    threshold = float(np.quantile(spacing, quantile))
    distance, which = _nearest(np.asarray(output_features, float), np.asarray(test_features, float))
    count = int((distance < threshold).sum())
    return {
        "outputs": len(distance),
        "threshold": threshold,
        "near_copies": count,
        "share": count / len(distance),
        "min_distance": float(distance.min()),
        "closest": int(which[int(np.argmin(distance))]),
    }
