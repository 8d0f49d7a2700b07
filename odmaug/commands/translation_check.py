"""``odmaug translate-check``: is grade translation (SDEdit, Meng et al. 2022) trustworthy?

Real images drawn from the generator run's TRAINING split (stratified over grades, seeded) are
translated to every target grade at each strength, then judged by a classifier trained on real
data (:mod:`odmaug.metrics.translation` holds the arithmetic):

* grade path: the classifier's predicted grade, and its expected grade sum_k p_k k (finer: it
  moves before the argmax does), should rise with the target grade: Spearman's rho per source
  and the share of monotone strips, per strength;
* distance: the classifier-feature distance from each output to its source, per strength;
* near copies: outputs closer to a TEST image than test images are to the training images (the
  0.01 quantile of that spacing), in the same feature space.

Writes ``translation_check.json`` (every figure with the number of images it rests on) and
``strips.png`` (one row per source: the source, then each target grade, at the middle strength).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from odmaug.config import check_strength
from odmaug.errors import OdmaugError

CHECK_FILE = "translation_check.json"
STRIPS_FILE = "strips.png"
NEAR_COPY_QUANTILE = 0.01
SOURCE_STREAM = 0x7C4EC
"""Second word of the source draw's seed, so the draw is not correlated with the noise (seed + i)."""


def parse_strengths(spec: str | Sequence[float]) -> list[float]:
    """``"0.4,0.6,0.8"`` (or numbers) -> sorted strengths, each in (0, 1], none repeated (as
    ``benchmark.translate.strengths`` refuses repeats too).

    Raises:
        OdmaugError: a value that is not a number, outside (0, 1], or given twice.
    """
    parts = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else list(spec)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise OdmaugError(f"--strengths: '{spec}' is not a list of numbers (use e.g. 0.4,0.6,0.8)") from None
    if not values:
        raise OdmaugError("--strengths: give at least one strength")
    for v in values:
        try:
            check_strength(v)
        except ValueError:
            raise OdmaugError(f"--strengths must each be in (0, 1] (got {v:g})") from None
    if len(set(values)) != len(values):
        raise OdmaugError(f"--strengths repeats a strength (got {spec})")
    return sorted(values)


def draw_sources(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` row numbers of a training split with grades ``labels`` [N], stratified over grades.

    Round robin over the grades (lowest first), each grade's rows taken in an order drawn with
    ``numpy.random.default_rng([seed, SOURCE_STREAM])``; a grade that runs out is skipped. Returned
    grouped by grade, in draw order within a grade: int64 [n].

    Raises:
        OdmaugError: ``n`` below 1 or above N.
    """
    if not 1 <= n <= len(labels):
        raise OdmaugError(f"--sources must be in 1..{len(labels)} (the training split's images; got {n})")
    rng = np.random.default_rng([seed, SOURCE_STREAM])
    queues = [list(rng.permutation(np.flatnonzero(labels == g))) for g in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < n:
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(int(queue.pop(0)))
    return np.array(sorted(picked, key=lambda r: labels[r]), dtype=np.int64)  # a stable sort keeps the draw order


@dataclass(frozen=True)
class CheckSummary:
    """What :func:`translation_check` wrote: the folder and the report it holds."""

    out: Path
    report: dict[str, Any]


@dataclass
class _Judge:
    """The real-data classifier: grade probabilities and penultimate features of uint8 images."""

    features: Any  # odmaug.classify.features.ClassifierFeatures

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        from odmaug.classify.corn import grade_outputs
        from odmaug.classify.predict import predict_logits

        logits = predict_logits(self.features.model, self.features.meta, images, self.features.device)
        return grade_outputs(logits, self.features.meta.head)[0]  # [N, C]

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return self.features(images).numpy()  # [N, D]


def _finite(value: Any) -> Any:
    """NaN and infinities -> None, so the JSON is standard (a NaN rho means: no ranking to correlate)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _check_inputs(out: Path, sources: int, seed: int, strengths, force: bool) -> list[float]:
    from odmaug.atomic import check_writable

    if not force and any((out / name).exists() for name in (CHECK_FILE, STRIPS_FILE)):
        raise OdmaugError(f"{out} already holds a translation check: give another --out, or --force to replace it")
    if sources < 1:
        raise OdmaugError(f"--sources must be 1 or more (got {sources})")
    if seed < 0:
        raise OdmaugError(f"--seed must be 0 or more (got {seed})")
    chosen = parse_strengths(strengths)
    check_writable(out, folder=True)
    return chosen


def _load_judge(classifier: str | Path, loaded) -> tuple[_Judge, dict[str, Any]]:
    from odmaug.classify.features import load_classifier_features
    from odmaug.classify.models import WEIGHTS_FILE, resolve_classifier_dir
    from odmaug.digest import file_digest

    folder = resolve_classifier_dir(classifier)
    features = load_classifier_features(folder, next(loaded.model.parameters()).device)
    if features.meta.num_classes != loaded.num_classes:
        raise OdmaugError(f"the classifier {folder} predicts {features.meta.num_classes} grades but the generator "
                          f"makes {loaded.num_classes}")
    about = {"path": str(folder), "name": features.name.removeprefix("domain:"), "model": features.meta.model, "num_classes": features.meta.num_classes,
             "weights": f"sha256:{file_digest(folder / WEIGHTS_FILE, 16)}"}
    return _Judge(features), about


def _splits(loaded):
    """The run's training and test splits (the test split must not be empty)."""
    from odmaug.data import load_table

    table = load_table(loaded.recipe.data)
    train, test = table.split("train"), table.split("test")
    if len(test) == 0:
        raise OdmaugError(f"{table.name}: no test split, so near copies of test images cannot be checked")
    return train, test


def _grade_paths(probs: np.ndarray, grades: Sequence[int], head: str = "softmax") -> dict[str, Any]:
    """probs [S, G, C] -> grade path of the predicted (the judge's head's rule) and of the expected
    grade, with both matrices."""
    from odmaug.classify.corn import grades_from_probabilities
    from odmaug.metrics.translation import grade_path

    predicted = grades_from_probabilities(probs, head)  # [S, G]
    expected = probs @ np.arange(probs.shape[2], dtype=float)  # [S, G]
    return {"predicted": grade_path(predicted, grades), "expected": grade_path(expected, grades),
            "predicted_grades": predicted.tolist(), "expected_grades": np.round(expected, 4).tolist()}


def _measure(judge: _Judge, sources: torch.Tensor, outputs: dict[float, torch.Tensor], grades: Sequence[int],
             train: torch.Tensor, test: torch.Tensor) -> dict[str, Any]:
    """The figures over ``outputs`` (strength -> uint8 [S, G, 3, H, W]) of ``sources`` (uint8 [S, 3, H, W])."""
    from odmaug.metrics.translation import distance_by_strength, near_copies

    s, g = len(sources), len(grades)
    source_feats, train_feats, test_feats = judge.embed(sources), judge.embed(train), judge.embed(test)
    feats = {k: judge.embed(v.flatten(0, 1)) for k, v in outputs.items()}  # [S * G, D], source-major
    strengths = list(outputs)
    all_feats = np.concatenate([feats[k] for k in strengths])
    distance = distance_by_strength(np.tile(np.repeat(source_feats, g, axis=0), (len(strengths), 1)), all_feats,
                                    np.repeat(strengths, s * g))
    rows = []
    for k, by_distance in zip(strengths, distance["by_strength"]):
        probs = judge.probabilities(outputs[k].flatten(0, 1)).reshape(s, g, -1)
        rows.append({"strength": k, "sources": s, "outputs": s * g, **_grade_paths(probs, grades, judge.features.meta.head),
                     "distance": {key: by_distance[key] for key in ("n", "mean", "sd")},
                     "near_copies": near_copies(feats[k], test_feats, train_feats, NEAR_COPY_QUANTILE)})
    overall = near_copies(all_feats, test_feats, train_feats, NEAR_COPY_QUANTILE)
    return {"by_strength": rows, "distance_rho": {"rho": distance["rho"], "n": len(all_feats)},
            "near_copies": {**overall, "quantile": NEAR_COPY_QUANTILE, "test_images": len(test_feats),
                            "train_images": len(train_feats)}}


def _source_rows(train, rows: np.ndarray, judge: _Judge, images: torch.Tensor, seed: int) -> dict[str, Any]:
    grades = train.labels[rows]
    from odmaug.classify.corn import grades_from_probabilities

    seen = grades_from_probabilities(judge.probabilities(images), judge.features.meta.head)
    return {
        "n": len(rows), "split": "train",
        "per_grade": {str(c): int((grades == c).sum()) for c in range(train.num_classes)},
        "classifier_agrees": int((seen == grades).sum()),  # of n: how well the judge grades the real sources
        "rows": [{"path": str(train.frame.at[int(r), "path"]), "grade": int(grades[i]), "noise_seed": seed + i,
                  "predicted": int(seen[i])} for i, r in enumerate(rows)],
    }


def translation_check(run: str | Path, classifier: str | Path, out: str | Path, sources: int = 20,
                      strengths: str | Sequence[float] = (0.4, 0.6, 0.8), grades: str = "all", seed: int = 0,
                      device: Optional[str] = None, sample: Optional[Mapping[str, Any]] = None,
                      force: bool = False) -> CheckSummary:
    """Translate ``sources`` training images to every grade of ``grades`` at each strength and judge
    the outputs with ``classifier``; writes ``<out>/translation_check.json`` and ``<out>/strips.png``.

    Source i uses forward-noise seed ``seed + i`` for every grade and strength, so strips differ
    only by grade and strength; sampling follows the run's ``sample`` section (DDIM, eta 0 unless
    ``sample`` says otherwise; see :func:`odmaug.commands.translate.translation_generator`).

    Raises:
        OdmaugError: strengths outside (0, 1], fewer than 2 grades, a missing run or classifier,
            a classifier of another grade count, more sources than training images, a data set
            without a test split, an unwritable ``out``, or one holding an earlier check (unless ``force``).
    """
    from odmaug.data import load_uint8
    from odmaug.commands.translate import parse_grades, translation_generator
    from odmaug.diffusion.grids import translate_to_grades
    from odmaug.diffusion.translate import check_distinct_chains

    out = Path(out)
    chosen_strengths = _check_inputs(out, sources, seed, strengths, force)
    loaded, settings = translation_generator(run, device, sample)
    effective = check_distinct_chains(loaded.schedule, chosen_strengths, settings.steps, settings.timestep_spacing,
                                      "--strengths")
    judge, about = _load_judge(classifier, loaded)
    chosen = sorted(parse_grades(grades, loaded.num_classes))
    if len(chosen) < 2:
        raise OdmaugError(f"--grades {grades}: the grade path needs at least 2 grades")
    train, test = _splits(loaded)
    rows = draw_sources(train.labels, sources, seed)
    size, crop_box = loaded.image_size, loaded.recipe.data.crop_box
    train_images = load_uint8(train, size, crop_box)  # [N, C, H, W]: the sources and the near-copy reference
    images = train_images[torch.from_numpy(rows)].contiguous()  # [S, C, H, W]
    outputs = {k: torch.stack([translate_to_grades(loaded, settings, src, chosen, seed + i, k)
                               for i, src in enumerate(images)]) for k in chosen_strengths}
    figures = _measure(judge, images, outputs, chosen, train_images, load_uint8(test, size, crop_box))
    middle = chosen_strengths[len(chosen_strengths) // 2]
    report = _finite({
        "generator": {"run": str(Path(run)), "step": loaded.step, "checkpoint_id": loaded.checkpoint_id},
        "classifier": about,
        "settings": {k: getattr(settings, k) for k in ("sampler", "steps", "eta", "guidance_scale", "use_ema", "ema_decay",
                                                       "precision", "timestep_spacing")},
        "seed": seed, "grades": chosen, "strengths": chosen_strengths,
        "effective_strengths": {f"{k:g}": effective[k] for k in chosen_strengths},
        "sources": _source_rows(train, rows, judge, images, seed), **figures,
        "strips": {"file": STRIPS_FILE, "strength": middle, "sources": len(rows), "grades": chosen},
    })
    _write(out, report, images, outputs[middle], chosen, middle, seed)
    return CheckSummary(out, report)


def _write(out: Path, report: dict[str, Any], images: torch.Tensor, made: torch.Tensor, grades: Sequence[int],
           strength: float, seed: int) -> None:
    from odmaug.atomic import atomic_write_json
    from odmaug.data.images import as_uint8
    from odmaug.diffusion.grids import draw_strips

    out.mkdir(parents=True, exist_ok=True)
    rows = [torch.cat([as_uint8(src).unsqueeze(0), row]) for src, row in zip(images, made)]  # [1 + G, C, H, W] each
    labels = [f"#{i} grade {r['grade']}" for i, r in enumerate(report["sources"]["rows"])]  # rows of the JSON
    draw_strips(rows, labels, grades, strength, f"noise seed {seed} + row", out / STRIPS_FILE)
    atomic_write_json(out / CHECK_FILE, report)
