"""The benchmark report's figures: per-arm metrics, per-grade FID, confusion matrices (PNG files).

Input is the benchmark's results dictionary (see :mod:`odmaug.benchmark.results`);
:mod:`odmaug.benchmark.report.document` embeds these files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odmaug.figures import plt, save_figure


def _save(fig: plt.Figure, path: Path) -> Path:
    return save_figure(fig, path, dpi=110)


def arm_metric_figure(results: dict[str, Any], path: Path) -> Path:
    """QWK and accuracy per arm: mean with 95% interval, and each seed as a dot.

    No error bar where the interval is degenerate (one seed, or every seed equal: ``ci_low`` None);
    the dots still show every seed.
    """
    arms = list(results["arms"])
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.3 * len(arms), 3.4))
    for ax, metric in zip(axes, ("qwk", "accuracy")):
        for i, arm in enumerate(arms):
            data = results["arms"][arm]
            s = data["summary"].get(metric, {})
            mean = s.get("mean")
            mean = float("nan") if mean is None else mean
            ax.bar(i, mean, color=f"C{i}", alpha=0.75)
            if s.get("ci_low") is not None and s.get("ci_high") is not None:
                ax.errorbar(i, mean, yerr=[[mean - s["ci_low"]], [s["ci_high"] - mean]], color="black", capsize=4)
            values = [seed[metric] for seed in data["seeds"].values()]
            ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=20)
        ax.set_title(metric.upper() if metric == "qwk" else metric)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def per_grade_fid_figure(results: dict[str, Any], extractor: str, path: Path) -> Path | None:
    """Per-grade FID bars, one bar per generator (the paper's Fig. 4, DM vs ODM); None without data."""
    gens = {n: g["metrics"][extractor] for n, g in results.get("generators", {}).items() if extractor in g.get("metrics", {})}
    if not gens:
        return None
    num_classes = results["num_classes"]
    width = 0.8 / len(gens)
    fig, ax = plt.subplots(figsize=(2.4 + 1.1 * num_classes, 3.4))  # + the legend's column
    for j, (name, metrics) in enumerate(gens.items()):
        by_grade = {int(r["grade"]): r for r in metrics.get("per_grade", [])}
        fids = [np.nan if by_grade.get(g, {}).get("too_few") or by_grade.get(g, {}).get("fid") is None else by_grade[g]["fid"]
                for g in range(num_classes)]
        ax.bar(np.arange(num_classes) + (j - (len(gens) - 1) / 2) * width, fids, width, label=name)
    ax.set_xticks(range(num_classes), [f"grade {g}" for g in range(num_classes)])
    ax.set_ylabel(f"FID ({extractor} features)")
    ax.set_title("Per-grade FID (lower is better)")
    # Beside the axes, not in them: inside, matplotlib's best spot was over the top grade's bars
    # (the scarcest grade has the highest FID), which are the ones the figure is about.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def arm_confusion_figure(results: dict[str, Any], path: Path) -> Path:
    """One confusion matrix per arm, side by side (test split, summed over seeds, rows normalised).

    :func:`odmaug.classify.report.confusion_figure` draws one classifier's matrix alone.
    """
    arms = list(results["arms"])
    fig, axes = plt.subplots(1, len(arms), figsize=(2.8 * len(arms), 2.9), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        matrices = [np.asarray(s["confusion"]) for s in results["arms"][arm]["seeds"].values()]
        total = np.sum(matrices, axis=0)
        norm = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(total):
            ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7, color="white" if norm[r, c] > 0.5 else "black")
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(len(total)))
        ax.set_yticks(range(len(total)))
    return _save(fig, path)
