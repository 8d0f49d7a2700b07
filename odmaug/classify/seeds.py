"""Train one classifier configuration under several seeds and summarise the spread."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from odmaug.atomic import atomic_write_json
from odmaug.classify.train import LogFn, train_classifier
from odmaug.config import Recipe
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError
from odmaug.metrics.classification import SUMMARY_KEYS, summarize_runs

SUMMARY_FILE = "summary.json"


def train_seeds(
    recipe: Recipe,
    train: ImageTable,
    val: ImageTable,
    test: Optional[ImageTable],
    out_root: str | Path,
    seeds: Sequence[int],
    device: str | torch.device = "auto",
    log: Optional[LogFn] = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train ``recipe.classifier`` once per seed into ``out_root/seed<k>/`` and summarise.

    Finished seeds are reused (same inputs), an interrupted one resumes, so re-running the call
    after a crash only does the missing work.

    Returns:
        ``{"seeds", "runs": [{"seed", "dir", "best_epoch", "val", "test", "timing"}],
        "summary": {"val"|"test": {metric: {"n", "mean", "std", "ci_low", "ci_high", "spread_omitted"}}}}``;
        the interval is the 95% t-distribution interval of the mean (None, with the reason in
        ``spread_omitted``, for one seed or seeds that all agree). Also written to
        ``out_root/summary.json``.
    """
    seeds = list(seeds)
    if not seeds:
        raise OdmaugError("train_seeds needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise OdmaugError(f"seeds repeat: {seeds}")
    out_root = Path(out_root)
    runs = []
    for seed in seeds:
        result = train_classifier(recipe, train, val, test, out_root / f"seed{seed}", seed, device, log, show_progress)
        runs.append({"seed": seed, "dir": str(result.out_dir), "best_epoch": result.best_epoch,
                     "val": _scalars(result.val), "test": _scalars(result.test), "timing": result.timing})
    summary: dict[str, Any] = {}
    for split in ("val", "test"):
        if all(run[split] is not None for run in runs):
            summary[split] = {k: summarize_runs([run[split][k] for run in runs]) for k in SUMMARY_KEYS}
    out = {"model": recipe.classifier.model, "train": train.name, "seeds": seeds, "runs": runs, "summary": summary}
    atomic_write_json(out_root / SUMMARY_FILE, out)
    return out


def _scalars(metrics: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if metrics is None:
        return None
    return {k: metrics[k] for k in ("n", *SUMMARY_KEYS)}
