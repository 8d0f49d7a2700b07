"""Presentation of classifier results: rich tables and the confusion-matrix heat map."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from rich.table import Table

from odmaug.metrics.classification import SUMMARY_KEYS

METRIC_NAMES = {
    "qwk": "QWK",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "balanced_accuracy": "balanced accuracy",
    "mae": "mean abs. grade error",
}


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(columns: dict[str, dict[str, Any]], title: str) -> Table:
    """One row per scalar metric, one column per named metrics dict (e.g. val / test)."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    table.add_row("images", *[str(m["n"]) for m in columns.values()])
    for key in SUMMARY_KEYS:
        table.add_row(METRIC_NAMES[key], *[_fmt(m[key]) for m in columns.values()])
    return table


def per_grade_rich(metrics: dict[str, Any], title: str) -> Table:
    """Per-grade support, predicted count, precision, recall and F1 ("-": undefined)."""
    table = Table(title=title, title_justify="left")
    for column in ("grade", "support", "predicted", "precision", "recall", "F1"):
        table.add_column(column, justify="right")
    for row in metrics["per_grade"]:
        table.add_row(str(row["grade"]), str(row["support"]), str(row["predicted"]),
                      _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]))
    return table


def confusion_rich(metrics: dict[str, Any], title: str) -> Table:
    """The confusion matrix as a rich table (rows: true grade, columns: predicted grade)."""
    matrix = np.asarray(metrics["confusion"])
    table = Table(title=title, title_justify="left")
    table.add_column("true \\ pred")
    for g in range(matrix.shape[1]):
        table.add_column(str(g), justify="right")
    for g, row in enumerate(matrix):
        table.add_row(str(g), *[f"[bold]{v}[/]" if i == g else str(v) for i, v in enumerate(row)])
    return table


def seeds_table(summary: dict[str, Any], split: str, title: str) -> Table:
    """Mean, std and 95% interval per metric over seeds (``train_seeds`` summary).

    A spread from one seed, or from seeds that all gave the same value, is no measure of
    uncertainty: std and interval read "–" and the interval cell says why (``spread_omitted``).
    """
    table = Table(title=title, title_justify="left")
    for column in ("metric", "mean", "std", "95% interval", "runs"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for key in SUMMARY_KEYS:
        s = summary["summary"][split][key]
        if s["ci_low"] is None:
            reason = s.get("spread_omitted")  # absent from summaries written before it existed
            std, interval = "–", "–" + (f" ({reason})" if reason else "")
        else:
            std, interval = _fmt(s["std"]), f"{s['ci_low']:.3f} .. {s['ci_high']:.3f}"
        table.add_row(METRIC_NAMES[key], _fmt(s["mean"]), std, interval, str(s["n"]))
    return table


def seed_runs_table(summary: dict[str, Any], title: str) -> Table:
    """One row per seed: selected epoch, val QWK, test QWK and accuracy."""
    table = Table(title=title, title_justify="left")
    for column in ("seed", "best epoch", "val QWK", "test QWK", "test accuracy"):
        table.add_column(column, justify="right")
    for run in summary["runs"]:
        test = run["test"] or {}
        table.add_row(str(run["seed"]), str(run["best_epoch"]), _fmt(run["val"]["qwk"]),
                      _fmt(test.get("qwk")), _fmt(test.get("accuracy")))
    return table


def confusion_figure(matrix: np.ndarray, path: str | Path, title: str = "",
                     labels: Optional[Sequence[str]] = None) -> Path:
    """Heat map PNG of a confusion matrix [C, C]: colour = share of the true grade's images, text = count."""
    from odmaug.figures import plt, save_figure

    matrix = np.asarray(matrix)
    c = matrix.shape[0]
    totals = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    labels = list(labels) if labels is not None else [str(g) for g in range(c)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * c, 0.8 + 0.7 * c))
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(c):
        for j in range(c):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(c), labels)
    ax.set_yticks(range(c), labels)
    ax.set_xlabel("predicted grade")
    ax.set_ylabel("true grade")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
