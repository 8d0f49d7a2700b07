"""Grade filter: keep synthetic images that a classifier trained on real data grades close to their grade.

ECC-DM-style filtering: an image generated for grade ``g`` is kept when the classifier predicts a
grade within ``max_grade_error`` of ``g``. Predictions are cached in ``<out>/grading.csv`` (per
classifier weights hash), so a re-run only grades the new images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

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
def predict_grades(model: torch.nn.Module, meta: Any, paths: list[Path], device: torch.device,
                   batch_size: int = 256) -> np.ndarray:
    """Predicted grade (argmax of the classifier's logits) of each PNG, [N] int64."""
    from odmaug.classify.features import prepare_batch

    out = np.empty(len(paths), dtype=np.int64)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        arrays = []
        for p in chunk:
            with Image.open(p) as img:
                arrays.append(np.asarray(img.convert("RGB")))
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # uint8 [B, 3, H, W]
        logits = model(prepare_batch(images, meta, device))  # [B, C]
        out[start : start + len(chunk)] = logits.argmax(dim=1).cpu().numpy()
    return out


def apply_filter(
    grade_filter: GradeFilter, folder: Any, items: list[Item], device: torch.device
) -> tuple[list[Item], dict[Item, int], dict[int, int]]:
    """Grade ``items`` of a synthesis folder and keep those within the allowed error.

    Returns:
        (kept items, predicted grade of each kept item, number rejected per grade).
    """
    from odmaug.classify import load_classifier
    from odmaug.classify.models import WEIGHTS_FILE, resolve_classifier_dir

    classifier_dir = resolve_classifier_dir(grade_filter.classifier)
    model, meta = load_classifier(classifier_dir, device)
    if meta.num_classes != folder.num_classes:
        raise OdmaugError(
            f"the classifier {classifier_dir} predicts {meta.num_classes} grades but the generator makes {folder.num_classes}"
        )
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
