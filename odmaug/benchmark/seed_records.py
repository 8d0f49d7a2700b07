"""The per-seed record every arm's figures are computed from (the holdout's and the pooled folds' alike)."""

from __future__ import annotations

from typing import Any

METRICS = ("qwk", "accuracy", "macro_f1", "balanced_accuracy", "mae")


def seed_record(test: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The per-seed figures the report uses, from a classifier's test metrics."""
    record = {k: test[k] for k in METRICS}
    recalls = {int(r["grade"]): r["recall"] for r in test["per_grade"]}
    for g in range(num_classes):
        record[f"recall_grade_{g}"] = recalls.get(g)
    record["confusion"] = test["confusion"]
    return record
