"""Stage 5, generative metrics: FID/KID/precision/recall per grade and overall, and grade fidelity,
per set of synthetic images (each generator's and each ``external:`` arm's).

Domain features come from the judge (:mod:`odmaug.benchmark.judge`: the ``real`` arm's first-seed
classifier, or a separate one); Inception features are computed when its weights are available and
skipped with a note otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odmaug.benchmark.stage import Plan, Splits, Stage, say
from odmaug.config import Recipe
from odmaug.console import warn
from odmaug.data import ImageTable


def plan_metrics(plan: Plan, recipe: Recipe) -> None:
    """One ``planned`` stage per set of synthetic images an arm trains with."""
    for name in dict.fromkeys(a.synthetic_name for a in plan.arms if a.synthetic_name is not None):
        plan.stages.append(Stage("metrics", name, plan.store, "planned", ", ".join(recipe.benchmark.extractors) + " features"))


def composition_matched_rows(labels: np.ndarray, real_counts: np.ndarray, seed: int) -> np.ndarray:
    """Sorted row indices of a subset of generated images (grades ``labels`` [M]) with the real
    training set's grade mix (``real_counts`` [C]), as large as possible.

    Overall FID/KID compare two distributions; a generated set with another grade mix than the
    real one would be penalised for the mix, not for its images. A grade without generated images
    (all rejected by ``benchmark.filter``) is left out of the mix rather than emptying the subset.
    """
    available = np.bincount(labels, minlength=len(real_counts))
    usable = (real_counts > 0) & (available > 0)
    scale = float(np.min(available[usable] / real_counts[usable])) if usable.any() else 0.0
    take = np.floor(real_counts * min(scale, 1.0e9)).astype(int)
    rng = np.random.default_rng(seed)
    rows = []
    for grade, n in enumerate(take):
        idx = np.flatnonzero(labels == grade)
        rows.extend(np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)).tolist())
    return np.array(sorted(rows), dtype=np.int64)


def composition_matched(generated: ImageTable, real_counts: np.ndarray, seed: int) -> ImageTable:
    """The subset of ``generated`` that :func:`composition_matched_rows` chooses, as a table."""
    rows = composition_matched_rows(generated.labels, real_counts, seed)
    return ImageTable(generated.frame.iloc[rows], generated.num_classes, f"{generated.name} (real grade mix)", generated.data_dir,
                      **generated.format_fields())


def build_extractors(recipe: Recipe, domain_dir: Path, device: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The feature extractors of ``benchmark.extractors``, built once for all generators, and the
    skipped ones (Inception without weights), said once here rather than once per generator."""
    from odmaug.metrics.features import build_extractor
    from odmaug.metrics.inception import InceptionUnavailable

    extractors, skipped = {}, []
    for spec in recipe.benchmark.extractors:
        try:
            extractors[spec] = build_extractor(f"domain:{domain_dir}" if spec == "domain" else spec, recipe.metrics, device)
        except InceptionUnavailable as err:
            warn(str(err))
            skipped.append({"extractor": spec, "reason": str(err)})
    return extractors, skipped


def generator_metrics(generated: ImageTable, real_train: ImageTable, recipe: Recipe, extractors: dict[str, Any],
                      domain_dir: Path, device: str) -> dict[str, Any]:
    """FID/KID/precision/recall per grade and overall, and grade fidelity, of one set of synthetic images."""
    from odmaug.classify.evaluate import evaluate_classifier
    from odmaug.metrics.generative import compute_generative_metrics

    matched = composition_matched_rows(generated.labels, real_train.counts(), recipe.seed)
    out: dict[str, Any] = {"n_generated": len(generated), "metrics": {}}
    for spec, extractor in extractors.items():
        found = compute_generative_metrics(real_train, generated, extractor, recipe.metrics,
                                           image_size=recipe.image_size("metrics"), crop_box=recipe.data.crop_box,
                                           seed=recipe.seed, overall_rows=matched)
        out["metrics"][spec] = {"overall": found["overall"], "per_grade": found["per_grade"], "extractor": extractor.name}
    fidelity = evaluate_classifier(domain_dir, generated, device=device)["overall"]
    out["fidelity"] = {"qwk": fidelity["qwk"], "accuracy": fidelity["accuracy"],
                       "recall_per_grade": [r["recall"] for r in fidelity["per_grade"]], "confusion": fidelity["confusion"]}
    return out


def sample_grid(real_train: ImageTable, synthetic: dict[str, ImageTable], recipe: Recipe, path: Path, per_row: int = 8) -> Path:
    """Rows per grade: real examples, then each generator's images of that grade."""
    from odmaug.data.images import prepare
    from odmaug.figures import grade_grid

    size = recipe.image_size("data")
    rows, labels = [], []
    for grade in range(real_train.num_classes):
        for name, table in [("real", real_train), *synthetic.items()]:
            idx = np.flatnonzero(table.labels == grade)[:per_row]
            crop = recipe.data.crop_box if name == "real" else None
            images = [prepare(table.read(int(i)), size, crop) for i in idx]
            rows.append(np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8))
            labels.append(f"{name} g{grade}")
    return grade_grid(rows, path, labels, title="Real and generated images per grade")


def measure_generators(recipe: Recipe, splits: Splits, synthetic: dict[str, ImageTable], domain_dir: Path,
                       device: str, figures_dir: Path) -> dict[str, Any]:
    """The stage: ``{"generators": name -> metrics, "notes": [...], "grids": {...}, "extractors": [...],
    "real_reference": held-out real vs real in the judge's features (None without domain features)}``."""
    if not synthetic:
        return {"generators": {}, "notes": [], "grids": {}, "extractors": [], "real_reference": None}
    from odmaug.benchmark.judge import real_reference

    built, skipped = build_extractors(recipe, domain_dir, device)
    reference = real_reference(built["domain"], splits, recipe) if "domain" in built else None
    generators: dict[str, Any] = {}
    for name, table in synthetic.items():
        say(f"generative metrics: {name} ({len(table)} images)")
        generators[name] = generator_metrics(table, splits.train, recipe, built, domain_dir, device) | {"skipped": skipped}
    grid = sample_grid(splits.train, synthetic, recipe, figures_dir / "samples.png")
    return {"generators": generators, "notes": [f"{s['extractor']} metrics skipped: {s['reason']}" for s in skipped],
            "grids": {"real vs generated": str(grid)}, "real_reference": reference,
            "extractors": [e for e in recipe.benchmark.extractors if any(e in g["metrics"] for g in generators.values())]}
