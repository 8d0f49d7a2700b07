"""The generators' judge: the classifier whose features give the ``domain`` FID, KID, precision and
recall, and that grades every generated image (grade fidelity).

A figure in a weak judge's features says little: on real fundus photographs whose real-arm
classifier reached test QWK 0.23, every generator (even translations of real images) got precision
0.000 and domain FID spread over 151-1,971. So the judge's own test QWK and accuracy stand beside
every domain figure; held-out real images (the val split) are measured against the real training
split in the same features, the score a perfect generator would get at these sizes; and a warning
goes to the console and the report when the judge's test QWK is below ``benchmark.judge.min_qwk``
or that real-vs-real precision is below ``min_real_precision`` (degenerate features).

By default the real arm's first-seed classifier judges (it is trained anyway);
``benchmark.judge.separate`` trains one of its own on the real training split (its model, epochs
and seed), e.g. longer or larger than the arms' classifiers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odmaug.benchmark.stage import Plan, Splits, Stage, say
from odmaug.benchmark.store import classifier_folder
from odmaug.config import Recipe


def judge_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` with the separate judge's ``model`` and ``epochs`` in its classifier section (validated;
    a local ``classifier.pretrained`` file is dropped when the judge's model is another)."""
    judge = recipe.benchmark.judge
    update = {k: v for k, v in (("model", judge.model), ("epochs", judge.epochs)) if v is not None}
    if judge.model not in (None, recipe.classifier.model) and recipe.classifier.pretrained != "hub":
        update["pretrained"] = None  # a local weights file fits the arms' architecture, not the judge's
    classifier = type(recipe.classifier).model_validate(recipe.classifier.model_dump() | update)
    return recipe.model_copy(update={"classifier": classifier})


def judge_seed(recipe: Recipe) -> int:
    """The separate judge's seed: ``benchmark.judge.seed``, else the first classifier seed."""
    seed = recipe.benchmark.judge.seed
    return recipe.benchmark.seeds[0] if seed is None else int(seed)


def plan_judge(plan: Plan, recipe: Recipe) -> None:
    """With ``benchmark.judge.separate`` and images to judge: check its model and plan its stage.

    Raises:
        OdmaugError: the judge's model cannot run at the classifier's image size.
    """
    from odmaug.classify.models import check_classifier

    if not recipe.benchmark.judge.separate or not any(a.synthetic_name is not None for a in plan.arms):
        return
    judge = judge_recipe(recipe)
    cfg = judge.classifier
    check_classifier(cfg.model, recipe.data.num_classes, judge.image_size("classifier"), cfg.pretrained)
    plan.stages.append(Stage("classifier", f"judge ({cfg.model}, seed {judge_seed(recipe)})", plan.store, "planned",
                             f"{cfg.epochs} epochs on the real images: judges the generators", cfg.epochs, arm="real"))


def choose_judge(recipe: Recipe, splits: Splits, real_runs: dict, store: Path, device: str,
                 needed: bool) -> dict[str, Any]:
    """The judge's record: ``{"dir", "source", "model", "test_qwk", "test_accuracy", "n_test"}``.

    Args:
        real_runs: the real arm's classifier records by seed (``dir``, ``test`` metrics).
        needed: whether any images are judged; without, a separate judge is not trained.

    A separate judge is trained here (or reused from the store) on ``splits``' real training images.
    """
    from odmaug.classify.train import train_classifier

    if not (recipe.benchmark.judge.separate and needed):
        seed = recipe.benchmark.seeds[0]
        record = real_runs[seed]
        folder, test, model = Path(record["dir"]), record["test"], recipe.classifier.model
        source = f"the real arm's seed-{seed} classifier"
    else:
        cfg, seed = judge_recipe(recipe), judge_seed(recipe)
        folder = classifier_folder(store, "judge", cfg, (splits.train, splits.val, splits.test), seed)
        say(f"judge: {cfg.classifier.model}, {cfg.classifier.epochs} epochs, seed {seed} -> {folder.name}")
        result = train_classifier(cfg, splits.train, splits.val, splits.test, folder, seed, device, show_progress=False)
        folder, test, model = result.out_dir, result.test, cfg.classifier.model
        source = f"a separate classifier (seed {seed}, {cfg.classifier.epochs} epochs)"
    return {"dir": str(folder), "source": source, "model": model, "test_qwk": test.get("qwk"),
            "test_accuracy": test.get("accuracy"), "n_test": test.get("n")}


def real_reference(extractor, splits: Splits, recipe: Recipe) -> dict[str, Any]:
    """Held-out real images (val) against the real training split in ``extractor``'s features:
    ``{"fid", "precision", "recall", "n_real", "n_heldout"}``, what a perfect generator would score
    with as many images (FID on few images is biased upward: this is its floor here)."""
    from odmaug.metrics.feature_cache import cached_features
    from odmaug.metrics.features import as_extractor
    from odmaug.metrics.generative import extract_table_features, fid_from_features, precision_recall

    cfg, size, crop_box = recipe.metrics, recipe.image_size("metrics"), recipe.data.crop_box
    adapted = as_extractor(extractor, cfg.batch_size)

    def features(table) -> tuple[np.ndarray, np.ndarray]:
        return extract_table_features(table, adapted, size, crop_box, cfg.batch_size, f"real {table.name}")

    train_x = cached_features(splits.train, size, crop_box, adapted.identity if cfg.cache else None,
                              lambda: features(splits.train), cfg.cache_dir)[0]
    held_x = features(splits.val)[0]
    pr = precision_recall(train_x, held_x, k=cfg.nearest_k)
    return {"fid": fid_from_features(train_x, held_x), "precision": pr["precision"], "recall": pr["recall"],
            "n_real": len(train_x), "n_heldout": len(held_x)}


def judge_warnings(judge: dict[str, Any], recipe: Recipe) -> list[str]:
    """One line per reason the judge cannot be trusted: a test QWK below ``min_qwk``, a held-out
    real precision below ``min_real_precision``."""
    settings, lines = recipe.benchmark.judge, []
    qwk = judge.get("test_qwk")
    if qwk is None or not np.isfinite(qwk) or qwk < settings.min_qwk:
        lines.append(f"the judge ({judge['source']}) has test QWK {_fmt(qwk)}, below benchmark.judge.min_qwk "
                     f"{settings.min_qwk:g}: its domain FID/KID/precision/recall and grade fidelity say little; "
                     "train a stronger one with benchmark.judge.separate=true (more epochs, another model)")
    precision = (judge.get("real_reference") or {}).get("precision")
    if precision is not None and precision < settings.min_real_precision:
        lines.append(f"the judge's features are degenerate: held-out real images score precision {precision:.3f} "
                     f"against the real training split (below benchmark.judge.min_real_precision "
                     f"{settings.min_real_precision:g}); generators cannot score well in them either")
    return lines


def _fmt(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.3f}"


def judge_text(judge: dict[str, Any]) -> str:
    """One sentence for the report: who judged, how well it grades real images, the real-vs-real floor."""
    ref = judge.get("real_reference") or {}
    floor = "" if not ref else (f" Held-out real images ({ref['n_heldout']} val) against the real training split "
                                f"({ref['n_real']}) in its features: FID {ref['fid']:.2f}, precision "
                                f"{ref['precision']:.3f}, recall {ref['recall']:.3f} (what a perfect generator "
                                "would score here).")
    return (f"Judge of the domain figures and grade fidelity: {judge['source']}, {judge['model']}, test QWK "
            f"{_fmt(judge.get('test_qwk'))}, accuracy {_fmt(judge.get('test_accuracy'))} on "
            f"{judge.get('n_test', '?')} test images.{floor}")
