"""The benchmark's seeds x test-images uncertainty: reads each classifier's stored test predictions
and runs :func:`odmaug.metrics.bootstrap.paired_bootstrap` over them.

Every classifier job writes ``predictions.csv`` (validation then test rows, in split order; see
:func:`odmaug.classify.train.train_classifier`), so the bootstrap needs no extra stage and a
results.json can be rebuilt from the store alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from odmaug.classify.outputs import PREDICTIONS_FILE
from odmaug.metrics.bootstrap import confusion_metric, paired_bootstrap


def read_test_predictions(classifier_dir: str | Path) -> pd.DataFrame:
    """The test rows of a classifier's ``predictions.csv``: path, label, predicted (in test-split order)."""
    frame = pd.read_csv(Path(classifier_dir) / PREDICTIONS_FILE)
    return frame.loc[frame["split"] == "test", ["path", "label", "predicted"]].reset_index(drop=True)


def collect_predictions(dirs: dict[str, dict[int, str]]) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    """Test labels [N] and per-arm predictions [S, N] over the seeds every arm has (sorted).

    Args:
        dirs: arm -> seed -> classifier folder.

    Raises:
        ValueError: no seed common to every arm, or two folders whose test rows differ (other
            images, order or grades): pairing would then compare different images.
    """
    seeds = sorted(set.intersection(*(set(int(s) for s in by) for by in dirs.values())))
    if not seeds:
        raise ValueError("no seed is shared by every arm")
    reference: Optional[pd.DataFrame] = None
    preds: dict[str, np.ndarray] = {}
    for arm, by_seed in dirs.items():
        rows = []
        for seed in seeds:
            frame = read_test_predictions(by_seed.get(seed, by_seed.get(str(seed))))
            if reference is None:
                reference = frame
            elif not (frame["path"].equals(reference["path"]) and frame["label"].equals(reference["label"])):
                raise ValueError(f"{arm} seed {seed}: its test rows are not those of the other classifiers")
            rows.append(frame["predicted"].to_numpy(np.int64))
        preds[arm] = np.stack(rows)
    return reference["label"].to_numpy(np.int64), preds, seeds


def bootstrap_metrics(num_classes: int) -> dict:
    """The bootstrapped figures, named as the per-seed records name them: ``qwk``, ``accuracy``,
    ``balanced_accuracy`` and ``recall_grade_<C-1>`` (top-grade recall)."""
    metrics = {name: confusion_metric(name) for name in ("qwk", "accuracy", "balanced_accuracy")}
    metrics[f"recall_grade_{num_classes - 1}"] = confusion_metric("top_recall")
    return metrics


def benchmark_bootstrap(arms: dict[str, dict[str, Any]], num_classes: int, seed: int,
                        n_boot: int = 2000, refs: tuple[str, ...] = ("real", "oversample")) -> dict[str, Any]:
    """The ``bootstrap`` entry of results.json, from each arm's ``classifiers`` (seed -> folder).

    Metric keys follow the per-seed records: ``qwk``, ``accuracy``, ``balanced_accuracy`` and
    ``recall_grade_<C-1>`` (top-grade recall); differences against each of ``refs`` present. Adds ``seeds`` (the seeds used) to
    :func:`~odmaug.metrics.bootstrap.paired_bootstrap`'s dict; on unreadable or unpaired
    predictions returns ``{"error": why}`` (the seed-only figures still stand).
    """
    metrics = bootstrap_metrics(num_classes)
    try:
        labels, preds, seeds = collect_predictions({arm: data["classifiers"] for arm, data in arms.items()})
    except (OSError, KeyError, ValueError, TypeError) as err:
        return {"error": f"no seeds × images bootstrap: {err}"}
    return paired_bootstrap(preds, labels, num_classes, metrics, refs, n_boot=n_boot, seed=seed) | {"seeds": seeds}
