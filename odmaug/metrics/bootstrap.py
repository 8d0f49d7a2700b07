"""Uncertainty that counts the test images as well as the seeds: a t-interval on the two-level SE.

A benchmark figure is a seed mean: S classifiers (training seeds) judged on one test set of N
images. It varies with the seeds (another seed trains another classifier) and with the images
(another N images would give other figures). Both parts are estimated and added:

* seeds: the spread of the S per-seed figures, SE_seeds = sd / sqrt(S), as in the t-interval over
  seeds of :func:`odmaug.metrics.classification.summarize_runs`. It holds the seed-to-seed effect and
  the part of each seed's test-set noise that differs between seeds;
* test images: what every seed shares, because all are judged on the same N images (a hard test
  set is hard for every seed). A paired bootstrap draws the N test images with replacement B times
  (the same indices for every arm and seed, so what arms get right or wrong together cancels in a
  difference; Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 6), and SE_images² is
  the mean covariance between two seeds' figures over those resamples (the shared part only: the
  rest is in the seed spread already). One seed: the figure's whole bootstrap variance.

SE = sqrt(SE_seeds² + SE_images²) (the variance of a mean over a crossed seeds x images design) and
the interval is estimate ± t_{S-1, 1-α/2} · SE: never narrower than the seeds-only t-interval. The
t quantile on S - 1 degrees of freedom is what keeps it valid with few seeds: the two-stage
percentile bootstrap it replaces (resample seeds, then images) spreads as (S-1)/S of the seeds'
variance with a normal quantile and covered a known difference only 76-90% of the time at 3 seeds
once seeds differ (the few-clusters problem: Cameron, Gelbach & Miller 2008, *Rev. Econ. Stat.*
90(3)). ``tests/test_bootstrap.py`` checks coverage >= 0.93 by simulation at 3 and 5 seeds. With one
seed only the images vary and the normal quantile is used.

The minimum detectable effect at 80% power, two-sided alpha = 0.05, comes from the same SE and
degrees of freedom (the t form of the power formula; Chow, Shao & Wang 2008, *Sample Size
Calculations in Clinical Research*, §3.1):

    MDE = (t_{S-1, 1-alpha/2} + t_{S-1, power}) * SE      (normal quantiles, 2.80 * SE, for one seed)

the true difference this many seeds and images detect 80% of the time; a null result reads "no
gain larger than the MDE". Metrics come from confusion matrices built per resample with one matrix
product (image counts x one-hot codes); QWK from a confusion matrix equals scikit-learn's
``cohen_kappa_score(weights="quadratic")``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Optional, Sequence

import numpy as np
from scipy import stats

METRICS = ("qwk", "accuracy", "balanced_accuracy", "top_recall")
"""Figures bootstrapped by default; ``top_recall`` is the recall of the highest grade."""

METHOD = "t-seeds-images"
"""Recorded in results: estimate ± t_{S-1} sqrt(SE_seeds² + SE_images²) (results.json files made
before it have no ``method`` and a two-stage percentile bootstrap)."""


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


@lru_cache(maxsize=64)  # scipy builds a distribution object per call: ~1 ms, more than the bootstrap itself
def _t_quantiles(seeds: int, confidence: float, power: float) -> tuple[float, float]:
    """Quantiles for the interval and the MDE: Student's t on S - 1 degrees of freedom (S >= 2),
    the normal distribution for one seed (then only the images vary)."""
    dist = stats.t(seeds - 1) if seeds >= 2 else stats.norm
    return float(dist.ppf(0.5 + confidence / 2)), float(dist.ppf(power))


def _test_set_se(draws: np.ndarray) -> float:
    """SE of the seed mean due to the test images alone, from per-seed figures under image resamples
    [B, S]: the mean covariance between two seeds' figures (the part every seed shares; what differs
    between seeds on one test set is counted by the seed spread). One seed: the figure's own SE."""
    if draws.shape[1] == 1:
        return float(draws[:, 0].std(ddof=1))
    cov = np.cov(draws, rowvar=False)
    shared = (cov.sum() - np.trace(cov)) / (cov.shape[0] * (cov.shape[0] - 1))
    return float(np.sqrt(max(shared, 0.0)))


def _summary(per_seed: np.ndarray, draws: np.ndarray, confidence: float, power: float) -> dict[str, Any]:
    """Estimate (seed mean), interval, SE and MDE of one figure from its per-seed values on the test
    set [S] and under each image resample [B, S] (resamples where a figure is undefined dropped)."""
    estimate = float(np.mean(per_seed))
    draws = draws[~np.isnan(draws).any(axis=1)]
    out: dict[str, Any] = {"estimate": None if np.isnan(estimate) else estimate, "ci_low": None, "ci_high": None,
                           "se": None, "se_seeds": None, "se_images": None, "df": None, "mde": None,
                           "resamples": int(len(draws)), "identical": False}
    if len(draws) < 2 or out["estimate"] is None:
        return out
    seeds = per_seed.size
    se_seeds = float(per_seed.std(ddof=1) / np.sqrt(seeds)) if seeds >= 2 else 0.0
    se_images = _test_set_se(draws)
    se = float(np.hypot(se_seeds, se_images))
    q, q_power = _t_quantiles(seeds, confidence, power)
    identical = bool(np.all(draws == 0) and np.all(per_seed == 0))  # equal in every resample: no spread, no MDE
    out.update(ci_low=estimate - q * se, ci_high=estimate + q * se, se=se, se_seeds=se_seeds, se_images=se_images,
               df=seeds - 1 if seeds >= 2 else None, mde=None if identical else (q + q_power) * se, identical=identical)
    return out


def paired_bootstrap(preds: dict[str, np.ndarray], labels: np.ndarray, num_classes: int,
                     metrics: Sequence[str] | dict[str, Callable] = METRICS, refs: Sequence[str] = ("real", "oversample"),
                     n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
                     power: float = 0.8, strata: Optional[np.ndarray] = None) -> dict[str, Any]:
    """Seeds x test-images interval (see the module docstring) of every arm and arm - reference.

    Args:
        preds: arm -> predicted grades int [S, N]; row k of every arm is the same training seed.
        labels: true grades int [N] of the shared test split.
        num_classes: number of grades C (grades 0..C-1).
        metrics: names from :data:`METRICS`, or name -> function of confusion counts [..., C, C] -> [...].
        refs: the arms differences are taken against (those present in ``preds``).
        n_boot: image resamples B.
        seed: seeds the resampling (the benchmark passes its recipe seed).
        confidence: interval coverage; also the test's 1 - alpha for the MDE.
        power: the MDE's power.
        strata: optional group per image [N] (the fold whose test part holds it): images are then
            resampled within their group, as cross-validation's pooled test parts were drawn.

    Returns:
        ``{"n_images", "n_seeds", "resamples", "seed", "confidence", "power", "method",
        "arms": {arm: {metric: summary}}, "paired": {arm: {"vs_<ref>": {metric: summary}}}}``, a
        summary being ``{"estimate", "ci_low", "ci_high", "se", "se_seeds", "se_images", "df",
        "mde", "resamples", "identical"}`` (``df``: the t quantile's degrees of freedom, None for
        one seed; ``resamples``: image draws where the figure is defined, e.g. top-grade recall
        needs a top-grade image; ``identical``: every seed and every resample differed by exactly 0).

    Raises:
        ValueError: predictions of different shapes, or labels that do not match them.
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = {a: np.atleast_2d(np.asarray(p, dtype=np.int64)) for a, p in preds.items()}
    s, n = next(iter(preds.values())).shape
    if any(p.shape != (s, n) for p in preds.values()) or labels.shape != (n,):
        raise ValueError(f"predictions must all be [S, N] with labels [N]; got {[p.shape for p in preds.values()]}, {labels.shape}")
    rng = np.random.default_rng(seed)
    boot, point = _per_seed(preds, labels, _image_counts(rng, n_boot, n, strata), num_classes, metrics)
    out: dict[str, Any] = {"n_images": int(n), "n_seeds": int(s), "resamples": int(n_boot), "seed": int(seed),
                           "confidence": confidence, "power": power, "method": METHOD, "arms": {}, "paired": {}}
    for arm in preds:
        out["arms"][arm] = {m: _summary(point[arm][m], boot[arm][m], confidence, power) for m in metrics}
        for ref in (r for r in refs if r in preds and r != arm):
            out["paired"].setdefault(arm, {})[f"vs_{ref}"] = {
                m: _summary(point[arm][m] - point[ref][m], boot[arm][m] - boot[ref][m], confidence, power) for m in metrics}
    return out
