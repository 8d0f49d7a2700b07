"""Judge a trained classifier on any set of graded images, and the grade fidelity of synthetic ones.

:func:`evaluate_classifier` scores every image of a table (overall, and per source when real and
synthetic rows are mixed); :func:`grade_fidelity` asks how well a real-data classifier recovers
the grades a generator was asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from odmaug.atomic import atomic_path, atomic_write_json
from odmaug.classify.corn import grade_outputs
from odmaug.classify.models import load_classifier, resolve_classifier_dir
from odmaug.classify.predict import load_images, predict_logits, predictions_frame
from odmaug.precision import resolve_precision
from odmaug.data import ImageTable, write_manifest
from odmaug.device import resolve_device
from odmaug.errors import OdmaugError
from odmaug.metrics.classification import classification_metrics

EVALUATION_FILE = "evaluation.json"


def check_grades(table: ImageTable, num_classes: int) -> None:
    """A table with grades the classifier was not trained for is an error, as is an empty one."""
    if len(table) == 0:
        raise OdmaugError(f"{table.name}: no images to evaluate (empty split)")
    top = int(table.labels.max())
    if top >= num_classes:
        raise OdmaugError(
            f"{table.name}: has grade {top}, but the classifier was trained for grades 0..{num_classes - 1}"
        )


def evaluate_classifier(
    classifier_dir: str | Path,
    table: ImageTable,
    out_dir: Optional[str | Path] = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    batch_size: int = 256,
) -> dict[str, Any]:
    """Predict every image of ``table`` and score the predictions.

    Args:
        classifier_dir: classifier folder, or a run folder with ``classifier/``.
        table: graded images (a split, a manifest, a folder); grades must be within the model's.
        out_dir: when given, writes ``evaluation.json``, ``confusion.csv``, ``confusion.png`` and
            ``predictions.csv`` there (atomically).
        device: the command's torch.device (a name such as ``auto`` is resolved here).
        precision: ``auto``/``bf16``/``fp16``/``fp32`` autocast for inference.
        batch_size: images per forward pass.

    Returns:
        ``{"classifier", "model", "data", "counts", "sources", "overall": metrics,
        "by_source": {source: metrics}}`` (``by_source`` only when sources are mixed)
        where metrics is :func:`~odmaug.metrics.classification.classification_metrics`' dict.
    """
    folder = resolve_classifier_dir(classifier_dir)
    device = resolve_device(device)
    model, meta = load_classifier(folder, device)
    check_grades(table, meta.num_classes)
    images = load_images(table, meta.image_size, meta.crop_box)  # uint8 [N, 3, S, S]
    logits = predict_logits(model, meta, images, device, batch_size, resolve_precision(precision, device))
    frame = predictions_frame(table, *grade_outputs(logits, meta.head))  # probabilities [N, C], grades [N]
    result = {
        "classifier": str(folder),
        "model": meta.model,
        "data": table.name,
        "counts": table.counts().tolist(),
        "sources": sorted(frame["source"].fillna("real").unique().tolist()),
        "overall": classification_metrics(frame["label"], frame["predicted"], meta.num_classes),
        "by_source": {},
    }
    if len(result["sources"]) > 1:
        for source in result["sources"]:
            rows = frame[frame["source"].fillna("real") == source]
            result["by_source"][source] = classification_metrics(rows["label"], rows["predicted"], meta.num_classes)
    if out_dir is not None:
        write_evaluation(result, frame, Path(out_dir))
    return result


def grade_fidelity(classifier_dir: str | Path, table: ImageTable, device: str | torch.device = "cpu",
                   out_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """How well a real-data classifier recovers the intended grades of synthetic images.

    Only rows with ``source == "synthetic"`` are scored (all rows when there is no such row, e.g.
    a folder of generated images).

    Returns:
        ``{"n", "qwk", "accuracy", "mae", "recall_per_grade": [C], "confusion": [[C] * C],
        "metrics": full classification_metrics dict}``.
    """
    synthetic = table.frame["source"] == "synthetic"
    if synthetic.any():
        table = ImageTable(table.frame[synthetic], table.num_classes, f"{table.name}/synthetic", table.data_dir,
                           **table.format_fields())
    metrics = evaluate_classifier(classifier_dir, table, out_dir, device)["overall"]
    return {
        "n": metrics["n"],
        "qwk": metrics["qwk"],
        "accuracy": metrics["accuracy"],
        "mae": metrics["mae"],
        "recall_per_grade": [row["recall"] for row in metrics["per_grade"]],
        "confusion": metrics["confusion"],
        "metrics": metrics,
    }


def write_evaluation(result: dict[str, Any], frame: pd.DataFrame, out_dir: Path) -> None:
    """evaluation.json, confusion.csv (+ per source), confusion.png and predictions.csv in ``out_dir``."""
    from odmaug.classify.report import confusion_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(frame, out_dir / "predictions.csv")
    parts = {"": result["overall"], **{f"-{s}": m for s, m in result["by_source"].items()}}
    for suffix, metrics in parts.items():
        matrix = np.asarray(metrics["confusion"])
        grades = [f"grade {g}" for g in range(matrix.shape[0])]
        table = pd.DataFrame(matrix, index=pd.Index(grades, name="true \\ predicted"), columns=grades)
        with atomic_path(out_dir / f"confusion{suffix}.csv") as tmp:
            table.to_csv(tmp)
        title = f"{result['data']}{' (' + suffix[1:] + ')' if suffix else ''}: QWK {metrics['qwk']:.3f}, n={metrics['n']}"
        confusion_figure(matrix, out_dir / f"confusion{suffix}.png", title)
    atomic_write_json(out_dir / EVALUATION_FILE, result)
