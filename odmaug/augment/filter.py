"""Grade filter: keep synthetic images that a classifier trained on real data grades close to their grade.

ECC-DM-style filtering: an image generated for grade ``g`` is kept when the classifier predicts a
grade within ``max_grade_error`` of ``g``. Predictions of a synthesis folder's images are cached in
``<out>/grading.csv`` (per classifier weights hash), so a re-run only grades the new images; a
table of finished images (:func:`filter_table`, e.g. a benchmark's ``external:`` arm) is graded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from odmaug.augment.plan import Item
from odmaug.atomic import atomic_path
from odmaug.digest import file_digest
from odmaug.errors import OdmaugError

GRADING_FILE = "grading.csv"


@dataclass(frozen=True)
class GradeFilter:
    """Keep images whose predicted grade is within ``max_grade_error`` of the intended grade.

    Attributes:
        classifier: a classifier folder, or a run folder holding ``classifier/``.
        max_grade_error: largest accepted |predicted - intended| (0 = exact grade).
        batch_size: images per classifier forward pass.
    """

    classifier: str | Path
    max_grade_error: int = 1
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.max_grade_error < 0:
            raise OdmaugError(f"--max-grade-error must be 0 or more (got {self.max_grade_error})")
        from odmaug.classify.models import read_meta

        # A missing or foreign classifier must fail here, before any image is generated.
        read_meta(self.classifier)


@torch.no_grad()
def predict_images(model: torch.nn.Module, meta: Any, read: Callable[[int], np.ndarray], n: int,
                   device: torch.device, batch_size: int = 256) -> np.ndarray:
    """Predicted grade (the argmax of a softmax head's logits, CORN's rule for a CORN head) of images
    ``read(0) .. read(n - 1)`` (uint8 or uint16 [H, W, C] with the classifier's channels C, one size
    per batch), [n] int64."""
    from odmaug.classify.corn import predicted_grades
    from odmaug.classify.features import prepare_batch

    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, batch_size):
        chunk = range(start, min(n, start + batch_size))
        images = torch.from_numpy(np.stack([read(i) for i in chunk])).permute(0, 3, 1, 2)  # [B, C, H, W]
        logits = model(prepare_batch(images, meta, device)).float()  # [B, C] (corn: [B, C - 1])
        grades = predicted_grades(logits, meta.head)
        out[start : start + len(chunk)] = grades.cpu().numpy()
    return out


def _read_for(path: Path, channels: int) -> np.ndarray:
    """A generated PNG at its own depth with the classifier's channels: [H, W, channels]."""
    from odmaug.data.decode import decode_image_file
    from odmaug.data.pixels import PixelFormat, convert

    image = decode_image_file(path)
    return convert(image, PixelFormat(channels, 16 if image.dtype == np.uint16 else 8))


def predict_grades(model: torch.nn.Module, meta: Any, paths: list[Path], device: torch.device,
                   batch_size: int = 256) -> np.ndarray:
    """Predicted grade (as :func:`predict_images`) of each PNG, [N] int64."""
    return predict_images(model, meta, lambda i: _read_for(paths[i], meta.channels), len(paths), device, batch_size)


def _load_filter(grade_filter: GradeFilter, num_classes: int, device: torch.device):
    """The filter's classifier (model, meta, folder), checked against the images' ``num_classes``."""
    from odmaug.classify import load_classifier
    from odmaug.classify.models import resolve_classifier_dir

    classifier_dir = resolve_classifier_dir(grade_filter.classifier)
    model, meta = load_classifier(classifier_dir, device)
    if meta.num_classes != num_classes:
        raise OdmaugError(
            f"the classifier {classifier_dir} predicts {meta.num_classes} grades but the generator makes {num_classes}"
        )
    return model, meta, classifier_dir


def filter_table(grade_filter: GradeFilter, table, device: torch.device):
    """The rows of ``table`` (an :class:`~odmaug.data.ImageTable` of finished images) the classifier
    grades within ``max_grade_error`` of their grade, with a ``predicted_grade`` column; and the
    number rejected per grade. Images are brought to the classifier's size first.

    Raises:
        OdmaugError: a classifier of another number of grades, or an image that cannot be read.
    """
    from odmaug.data.images import prepare

    model, meta, _ = _load_filter(grade_filter, table.num_classes, device)
    size = meta.image_size
    predicted = predict_images(model, meta, lambda i: prepare(table.read(i), size, None), len(table), device,
                               grade_filter.batch_size)
    keep = np.abs(predicted - table.labels) <= grade_filter.max_grade_error
    grades, counts = np.unique(table.labels[~keep], return_counts=True)
    frame = table.frame[keep].assign(predicted_grade=predicted[keep])
    kept = table.derived(frame)
    return kept, {int(g): int(n) for g, n in zip(grades, counts)}


def apply_filter(
    grade_filter: GradeFilter, folder: Any, items: list[Item], device: torch.device
) -> tuple[list[Item], dict[Item, int], dict[int, int]]:
    """Grade ``items`` of a synthesis folder and keep those within the allowed error.

    Returns:
        (kept items, predicted grade of each kept item, number rejected per grade).
    """
    from odmaug.classify.models import WEIGHTS_FILE

    model, meta, classifier_dir = _load_filter(grade_filter, folder.num_classes, device)
    classifier_id = file_digest(classifier_dir / WEIGHTS_FILE, 12)

    cache_path = folder.root / GRADING_FILE
    cached: dict[str, int] = {}
    if cache_path.is_file():
        try:
            old = pd.read_csv(cache_path, dtype={"path": str})
            old = old[old["classifier_id"].astype(str) == classifier_id]
            cached = dict(zip(old["path"], old["predicted_grade"].astype(int)))
        except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError, ValueError):
            cached = {}  # a damaged cache is only a cache: grade everything again
    todo = [i for i in items if i.relpath not in cached]
    if todo:
        predicted = predict_grades(model, meta, [folder.path(i) for i in todo], device, grade_filter.batch_size)
        cached.update({i.relpath: int(g) for i, g in zip(todo, predicted)})
    grades = {i: cached[i.relpath] for i in items}
    frame = pd.DataFrame(
        {"path": [i.relpath for i in sorted(items)], "classifier_id": classifier_id,
         "classifier": str(classifier_dir.resolve()), "predicted_grade": [grades[i] for i in sorted(items)]}
    )
    with atomic_path(cache_path) as tmp:
        frame.to_csv(tmp, index=False)

    kept = [i for i in items if abs(grades[i] - i.grade) <= grade_filter.max_grade_error]
    rejected: dict[int, int] = {}
    for i in items:
        if abs(grades[i] - i.grade) > grade_filter.max_grade_error:
            rejected[i.grade] = rejected.get(i.grade, 0) + 1
    return kept, {i: grades[i] for i in kept}, rejected
