"""The benchmark's protocols: ``holdout`` (one pass on the data's splits) and ``cv`` (k folds, pooled).

Under ``cv`` (:class:`~odmaug.config.evaluation.CrossValidationConfig`) the pool of labelled images (all, or
the train and val splits) is cut into k folds by :func:`odmaug.data.folds.assign_folds`
(stratified by grade, grouped by patient when the table has a group column). Each fold is one
pass of every stage with its own :class:`~odmaug.benchmark.stage.Splits`: its generators train on
its training part only, and every arm of a fold shares its folds, seeds and classifier settings.

Results pool the folds: every arm's per-seed figures come from its predictions on all folds' test
parts together (each image tested once, by the fold that held it out), and the paired bootstrap
resamples images within their fold (:func:`odmaug.metrics.bootstrap.paired_bootstrap`, ``strata``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from odmaug.benchmark.classifiers import Results
from odmaug.benchmark.seed_records import seed_record
from odmaug.benchmark.stage import Splits
from odmaug.config import Recipe
from odmaug.console import warn
from odmaug.data import ImageTable
from odmaug.data.folds import assign_folds, fold_warnings


def benchmark_splits(recipe: Recipe, table: ImageTable) -> list[Splits]:
    """One :class:`Splits` per pass: the table's own splits (holdout), or one per fold (cv).

    Raises:
        OdmaugError: holdout data without val or test images, or more folds than units.
    """
    bench = recipe.benchmark
    if bench.protocol == "holdout":
        if "cv" in bench.model_fields_set:  # a user who set the folds expects them to be used
            warn("benchmark.cv is set but benchmark.protocol is holdout, so the cv settings are ignored "
                 "(add --set benchmark.protocol=cv to use them)")
        return [Splits.of(table)]
    frame = table.frame
    if bench.cv.scope == "train-val":
        frame = frame[frame["split"].isin(["train", "val"])]
    frame = frame.reset_index(drop=True)
    labels = frame["label"].to_numpy(np.int64)
    has_groups = "group" in frame.columns and bool(frame["group"].notna().all())
    groups = frame["group"].astype(str).to_numpy() if has_groups else None
    folds = assign_folds(labels, groups, folds=bench.cv.folds, val_fraction=bench.cv.val_fraction, seed=recipe.seed)
    for line in fold_warnings(labels, folds):
        warn(line)
    out = []
    for fold in folds:
        split = np.full(len(frame), "train", dtype=object)
        split[fold.val], split[fold.test] = "val", "test"
        part = ImageTable(frame.assign(split=split), table.num_classes, table.name, table.data_dir,
                           **table.format_fields())
        part.crop = getattr(table, "crop", "none")
        out.append(Splits.of(part, fold=fold.index))
    return out


def _pooled(by_fold: list[tuple[Splits, Results]], arm: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: predicted grades on every fold's test part, concatenated in fold order [S, N]; and
    the true grades [N] in the same order."""
    from odmaug.benchmark.uncertainty import read_test_predictions

    rows, labels = [], None
    for seed in seeds:
        parts = [read_test_predictions(results[arm][seed]["dir"]) for _, results in by_fold]
        rows.append(np.concatenate([p["predicted"].to_numpy(np.int64) for p in parts]))
        if labels is None:  # the first seed's files give the true grades too: not read twice
            labels = np.concatenate([p["label"].to_numpy(np.int64) for p in parts])
    return np.stack(rows), labels


def pooled_arms(by_fold: list[tuple[Splits, Results]], arm_labels: list[str], recipe: Recipe,
                refs: tuple[str, ...] = ("real", "oversample")) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every arm's per-seed figures on the pooled test parts, and the fold-stratified bootstrap
    (differences against each of ``refs`` present).

    Returns:
        (arms, bootstrap) in the shape :func:`odmaug.benchmark.results.collect_results` writes:
        ``arms[label]`` has ``seeds`` (seed -> figures), ``classifiers`` and ``training_counts``
        (fold -> seed -> ...); ``bootstrap`` is :func:`~odmaug.metrics.bootstrap.paired_bootstrap`'s
        dict with ``seeds`` and ``folds``.
    """
    from odmaug.benchmark.uncertainty import bootstrap_metrics
    from odmaug.metrics.bootstrap import paired_bootstrap
    from odmaug.metrics.classification import classification_metrics

    c, seeds = recipe.data.num_classes, recipe.benchmark.seeds
    strata = np.concatenate([np.full(len(splits.test), splits.fold) for splits, _ in by_fold])
    arms, preds, labels = {}, {}, None
    for label in arm_labels:
        preds[label], labels = _pooled(by_fold, label, seeds)
        per_fold = {splits.fold: results[label] for splits, results in by_fold}
        arms[label] = {
            "seeds": {seed: seed_record(classification_metrics(labels, p, c), c) for seed, p in zip(seeds, preds[label])},
            "classifiers": {fold: {s: r["dir"] for s, r in runs.items()} for fold, runs in per_fold.items()},
            "training_counts": {fold: {s: r["counts"] for s, r in runs.items()} for fold, runs in per_fold.items()},
        }
    bootstrap = paired_bootstrap(preds, labels, c, bootstrap_metrics(c), refs, seed=recipe.seed, strata=strata)
    return arms, bootstrap | {"seeds": seeds, "folds": len(by_fold)}
