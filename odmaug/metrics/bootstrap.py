"""Uncertainty that counts the test images as well as the seeds: a paired hierarchical bootstrap.

A t-interval over seeds (:func:`odmaug.metrics.classification.summarize_runs`) treats the test
set as fixed: with 5 seeds and 400 test images it ignores that another 400 images would give other
figures, often the larger part of the uncertainty. Here each resample draws, with replacement,

1. S seeds out of the S trained seeds (the same draw for every arm: seed k of one arm is paired
   with seed k of another, as they share the seed's data order and initialisation), then
2. N test images out of the N (the same image indices for every arm and every drawn seed: all of
   them are judged on the one test set, so a hard image is hard for all of them),

the two-stage bootstrap of Davison & Hinkley (1997), *Bootstrap Methods and their Application*,
§3.8 (hierarchical data). A figure of a resample is its metric averaged over the drawn seeds, the
bootstrapped counterpart of the per-arm seed mean. A paired difference is taken within each
resample, so what both arms get right or wrong together cancels.

Returned per figure: the point estimate (seed mean on the actual test set), the 95% percentile
interval (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13), the bootstrap SE
(std of the resampled figures) and the minimum detectable effect at 80% power, two-sided
alpha = 0.05, from the normal-approximation power formula (e.g. Cohen 1988, *Statistical Power
Analysis for the Behavioral Sciences*, ch. 12; Chow, Shao & Wang 2008, *Sample Size Calculations
in Clinical Research*, §3.1):

    MDE = (z_{1 - alpha/2} + z_{power}) * SE = (1.960 + 0.842) * SE ≈ 2.80 * SE,

the true difference a z-test on this many images and seeds would detect 80% of the time. A null
result then reads "no gain larger than MDE". Metrics come from confusion matrices built per
resample with one matrix product (image counts x one-hot codes), not per-resample sklearn calls;
QWK from a confusion matrix equals scikit-learn's ``cohen_kappa_score(weights="quadratic")``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
from scipy import stats

METRICS = ("qwk", "accuracy", "balanced_accuracy", "top_recall")
"""Figures bootstrapped by default; ``top_recall`` is the recall of the highest grade."""


def qwk_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Quadratic weighted kappa of confusion counts [..., C, C] (rows true, columns predicted) -> [...].

    kappa = 1 - sum(W * O) / sum(W * E), W_ij = (i - j)^2, E = row sums x column sums / n (Cohen
    1968; scikit-learn's ``cohen_kappa_score``). Where the expected disagreement is 0 (one grade on
    both sides) kappa is 1 for perfect agreement, else 0, as in
    :func:`odmaug.metrics.classification.quadratic_weighted_kappa`.
    """
    c = conf.shape[-1]
    grades = np.arange(c)
    weights = (grades[:, None] - grades[None, :]) ** 2.0
    n = conf.sum(axis=(-2, -1))
    rows, cols = conf.sum(-1), conf.sum(-2)
    observed = np.einsum("...ij,ij->...", conf, weights)
    expected = np.einsum("...i,...j,ij->...", rows, cols, weights) / np.where(n > 0, n, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = 1.0 - observed / expected
    return np.where(expected > 0, kappa, np.where(observed == 0, 1.0, 0.0))


def confusion_metric(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """A metric of confusion counts [..., C, C] -> [...]; NaN where it is undefined (no true image of a grade)."""
    def recalls(conf: np.ndarray) -> np.ndarray:
        support = conf.sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(support > 0, np.diagonal(conf, axis1=-2, axis2=-1) / support, np.nan)

    def balanced(conf: np.ndarray) -> np.ndarray:
        # scikit-learn: mean recall over the grades present in y_true
        r = recalls(conf)
        present = ~np.isnan(r)
        return np.where(present, r, 0.0).sum(-1) / np.maximum(present.sum(-1), 1)

    table = {
        "qwk": qwk_from_confusion,
        "accuracy": lambda conf: np.trace(conf, axis1=-2, axis2=-1) / conf.sum(axis=(-2, -1)),
        "balanced_accuracy": balanced,
        "top_recall": lambda conf: recalls(conf)[..., -1],
    }
    return table[name]


def _image_counts(rng: np.random.Generator, n_boot: int, n: int, strata: Optional[np.ndarray] = None) -> np.ndarray:
    """How often each image is drawn per resample: [B, N] (each row sums to N). With ``strata``
    [N], each stratum (a cross-validation fold's test part) is resampled on its own, keeping its size."""
    if strata is None:
        strata = np.zeros(n, dtype=np.int64)
    counts = np.zeros((n_boot, n))
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))] + (np.arange(n_boot) * n)[:, None]
        counts += np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n)
    return counts


def _per_seed(preds: dict[str, np.ndarray], labels: np.ndarray, counts: np.ndarray, num_classes: int,
              metrics: Sequence[str] | dict[str, Callable]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Per arm and metric: the figure per resample and seed [B, S], and on the actual test set [S]."""
    arms = list(preds)
    s, n = preds[arms[0]].shape
    cc = num_classes * num_classes
    codes = np.stack([labels[None, :] * num_classes + preds[a] for a in arms])  # [A, S, N] in 0..C²-1
    onehot = np.zeros((n, len(arms) * s * cc))
    cols = (np.arange(len(arms) * s) * cc)[:, None] + codes.reshape(-1, n)
    onehot[np.broadcast_to(np.arange(n), cols.shape).ravel(), cols.ravel()] = 1.0
    shape = (len(arms), s, num_classes, num_classes)
    resampled = (counts @ onehot).reshape(-1, *shape)  # [B, A, S, C, C]
    actual = onehot.sum(0).reshape(shape)
    boot: dict[str, dict[str, np.ndarray]] = {}
    point: dict[str, dict[str, np.ndarray]] = {}
    for name in metrics:
        fn = metrics[name] if isinstance(metrics, dict) else confusion_metric(name)
        values, base = fn(resampled), fn(actual)
        for i, arm in enumerate(arms):
            boot.setdefault(arm, {})[name] = values[:, i]
            point.setdefault(arm, {})[name] = base[i]
    return boot, point


def _summary(estimate: float, draws: np.ndarray, confidence: float, power: float) -> dict[str, Any]:
    """Point estimate, percentile interval, SE and MDE from resampled figures [B] (NaN draws dropped)."""
    ok = draws[~np.isnan(draws)]
    out: dict[str, Any] = {"estimate": None if np.isnan(estimate) else float(estimate), "ci_low": None, "ci_high": None,
                           "se": None, "mde": None, "resamples": int(ok.size), "identical": False}
    if ok.size < 2:
        return out
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(ok, [tail, 100 - tail])
    se = float(ok.std(ddof=1))
    z = stats.norm.ppf(0.5 + confidence / 2) + stats.norm.ppf(power)
    out.update(ci_low=float(low), ci_high=float(high), se=se, mde=float(z * se), identical=bool(np.all(ok == 0)))
    return out


def paired_bootstrap(preds: dict[str, np.ndarray], labels: np.ndarray, num_classes: int,
                     metrics: Sequence[str] | dict[str, Callable] = METRICS, refs: Sequence[str] = ("real", "oversample"),
                     n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                     power: float = 0.8, strata: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Hierarchical paired bootstrap (seeds, then test images) of every arm and arm - reference.

    Args:
        preds: arm -> predicted grades int [S, N]; row k of every arm is the same training seed.
        labels: true grades int [N] of the shared test split.
        num_classes: number of grades C (grades 0..C-1).
        metrics: names from :data:`METRICS`, or name -> function of confusion counts [..., C, C] -> [...].
        refs: the arms differences are taken against (those present in ``preds``).
        n_boot: resamples B.
        seed: seeds the resampling (the benchmark passes its recipe seed).
        confidence: interval coverage; also the test's 1 - alpha for the MDE.
        power: the MDE's power.
        strata: optional group per image [N] (the fold whose test part holds it): images are then
            resampled within their group, as cross-validation's pooled test parts were drawn.

    Returns:
        ``{"n_images", "n_seeds", "resamples", "seed", "confidence", "power",
        "arms": {arm: {metric: summary}}, "paired": {arm: {"vs_<ref>": {metric: summary}}}}``, a
        summary being ``{"estimate", "ci_low", "ci_high", "se", "mde", "resamples", "identical"}``
        (``resamples``: draws where the figure is defined, e.g. top-grade recall needs a top-grade
        image; ``identical``: every paired resample differed by exactly 0).
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = {a: np.atleast_2d(np.asarray(p, dtype=np.int64)) for a, p in preds.items()}
    s, n = next(iter(preds.values())).shape
    if any(p.shape != (s, n) for p in preds.values()) or labels.shape != (n,):
        raise ValueError(f"predictions must all be [S, N] with labels [N]; got {[p.shape for p in preds.values()]}, {labels.shape}")
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, s, size=(n_boot, s))  # [B, S] seeds drawn, shared by every arm
    boot, point = _per_seed(preds, labels, _image_counts(rng, n_boot, n, strata), num_classes, metrics)
    rows = np.arange(n_boot)[:, None]
    # figure of a resample: mean over its drawn seeds (NaN where a drawn seed's figure is undefined)
    means = {a: {m: v[rows, seed_draws].mean(1) for m, v in by.items()} for a, by in boot.items()}
    base = {a: {m: float(np.mean(v)) for m, v in by.items()} for a, by in point.items()}
    out: dict[str, Any] = {"n_images": int(n), "n_seeds": int(s), "resamples": int(n_boot), "seed": int(seed),
                           "confidence": confidence, "power": power, "arms": {}, "paired": {}}
    for arm in preds:
        out["arms"][arm] = {m: _summary(base[arm][m], means[arm][m], confidence, power) for m in metrics}
        for ref in (r for r in refs if r in preds and r != arm):
            out["paired"].setdefault(arm, {})[f"vs_{ref}"] = {
                m: _summary(base[arm][m] - base[ref][m], means[arm][m] - means[ref][m], confidence, power) for m in metrics}
    return out


def mde_text(summary: Optional[dict[str, Any]], digits: int = 3) -> str:
    """``0.042`` (the MDE), or ``–`` where none was computed."""
    if not summary or summary.get("mde") is None:
        return "–"
    return f"{summary['mde']:.{digits}f}"
