"""Classifiers a pass trains before its classifier stage, judged on the pass's validation split only.

* **Strength selection** for the translation arms (``odm-translate``, ``dm-translate``): with
  several ``benchmark.translate.strengths``, each candidate's images are synthesized, the arm's
  training table is built from them, and the arm's classifier is trained with the first seed; the
  candidate with the best validation QWK wins (ties: the larger strength; a NaN QWK loses), and
  every seed then trains with it. The test split is never read for the choice. Cost per arm and
  pass: one synthesis and one classifier per candidate; the winner's classifier is exactly the
  arm's first-seed classifier (same table, settings and seed, so the same store folder), which the
  classifier stage then reuses: k candidates add k - 1 classifiers. With one candidate nothing runs.
* **The filter's classifier** (``benchmark.filter``): the real arm's first-seed classifier, trained
  here before synthesis so it can grade the synthetic images; the classifier stage reuses it too.

Under torchrun the classifiers are spread over the ranks (``i mod K``) and every rank reads the
finished results back from the store after a barrier, so every rank makes the same choice.
"""

from __future__ import annotations

import math
from typing import Any

from odmaug.benchmark.arms import Arm
from odmaug.benchmark.arm_specs import parse_arm
from odmaug.benchmark.datasets import training_table
from odmaug.benchmark.stage import Plan, Splits, Stage, say
from odmaug.benchmark.store import classifier_folder
from odmaug.config import Recipe
from odmaug.data import ImageTable
from odmaug.distributed import Context, barrier


def best_strength(val_qwk: dict[float, float]) -> float:
    """The candidate strength with the best validation QWK; ties go to the larger strength, and a
    NaN QWK (a classifier that predicts one grade) counts as the worst.

    Raises:
        ValueError: no candidates.
    """
    if not val_qwk:
        raise ValueError("no candidate strengths")

    def rank(strength: float) -> tuple[float, float]:
        qwk = val_qwk[strength]
        return (qwk if qwk is not None and math.isfinite(qwk) else -math.inf, strength)

    return max(val_qwk, key=rank)


def train_first_seed(jobs: list[tuple[Arm, dict[str, ImageTable]]], recipe: Recipe, splits: Splits, store,
                     context: Context, show_progress: bool) -> list[Any]:
    """Train each job's arm with the first seed exactly as the classifier stage will (same table,
    settings, seed, store folder), spread over the ranks; returns every job's
    :class:`~odmaug.classify.outputs.ClassifierResult` on every rank."""
    from odmaug.classify.train import train_classifier

    from odmaug.benchmark.remedies import arm_recipe

    seed = recipe.benchmark.seeds[0]
    runs = []
    for arm, synthetic in jobs:
        own = arm_recipe(recipe, arm)  # the arm's own classifier options, as the classifier stage uses them
        train = training_table(arm, splits, synthetic, own, seed)[0].split("train")
        runs.append((own, train, classifier_folder(store, arm.file_label, own, (train, splits.val, splits.test), seed)))
    for index, (own, train, out_dir) in enumerate(runs):
        if index % context.world_size == context.rank:
            train_classifier(own, train, splits.val, splits.test, out_dir, seed, context.device,
                             show_progress=show_progress)
    barrier(context)
    # A finished run with the same inputs is returned as stored, without training again.
    return [train_classifier(own, train, splits.val, splits.test, out_dir, seed, context.device, show_progress=False)
            for own, train, out_dir in runs]


def choose_strength(arm: Arm, candidates: dict[float, ImageTable], recipe: Recipe, splits: Splits, store,
                    context: Context, show_progress: bool) -> tuple[float, dict[str, Any]]:
    """The strength ``arm`` trains with, of ``candidates`` (strength -> its synthetic images), and
    the record results.json keeps: ``{"candidates", "val_qwk", "chosen", "seed", "rule"}``."""
    strengths = sorted(candidates)
    seed = recipe.benchmark.seeds[0]
    effective = effective_strengths(recipe)
    record: dict[str, Any] = {"candidates": strengths, "seed": seed, "val_qwk": {},
                              "effective": {f"{s:g}": effective[s] for s in strengths if s in effective}}
    if len(strengths) == 1:
        say(f"strength {arm.label}: {strengths[0]:g} (the only candidate, no selection)")
        return strengths[0], record | {"chosen": strengths[0], "rule": "the only candidate"}
    jobs = [(arm, {arm.synthetic_name: candidates[s]}) for s in strengths]
    results = train_first_seed(jobs, recipe, splits, store, context, show_progress)
    scores = {s: float(r.val["qwk"]) for s, r in zip(strengths, results)}
    chosen = best_strength(scores)
    shown = ", ".join(f"{s:g}: {q:.3f}" for s, q in scores.items())
    say(f"strength {arm.label}: val QWK of seed {seed}'s classifier per strength {{{shown}}} -> {chosen:g} "
        "(chosen on val, never on test)")
    return chosen, record | {"val_qwk": {f"{s:g}": q for s, q in scores.items()}, "chosen": chosen,
                             "rule": "best validation QWK of the first seed's classifier; ties: the larger strength"}


def filter_classifier(plan: Plan, recipe: Recipe, splits: Splits, context: Context, show_progress: bool):
    """The grade filter of ``benchmark.filter`` (a :class:`~odmaug.augment.filter.GradeFilter` on
    the real arm's first-seed classifier, trained now when it is not stored), or None when off."""
    from odmaug.augment.filter import GradeFilter

    settings = recipe.benchmark.filter
    if settings is None or not any(a.synthetic_name is not None for a in plan.arms):
        return None  # off, or no synthetic images to filter
    [result] = train_first_seed([(parse_arm("real"), {})], recipe, splits, plan.store, context, show_progress)
    say(f"filter: synthetic images kept when the real arm's seed {recipe.benchmark.seeds[0]} classifier grades "
        f"them within {settings.max_grade_error} of their grade ({result.out_dir.name})")
    return GradeFilter(result.out_dir, settings.max_grade_error)


def plan_filter(plan: Plan, recipe: Recipe) -> None:
    """With ``benchmark.filter``: a ``planned`` stage for the filter's classifier (before synthesis)."""
    epochs, seed = recipe.classifier.epochs, recipe.benchmark.seeds[0]
    if recipe.benchmark.filter is not None and any(a.synthetic_name is not None for a in plan.arms):
        plan.stages.append(Stage("classifier", f"real seed {seed} (filter)", plan.store, "planned",
                                 f"{epochs} epochs, before synthesis (reused as real seed {seed})", epochs, arm="real"))


def plan_selection(plan: Plan, recipe: Recipe) -> None:
    """A ``planned`` classifier stage per translation arm and candidate strength (none with one
    candidate); the winner's is reused as the arm's first-seed classifier."""
    epochs, t = recipe.classifier.epochs, recipe.benchmark.translate
    seed = recipe.benchmark.seeds[0]
    if len(t.strengths) < 2 or not translation_arms(plan):
        return
    effective_strengths(recipe)  # refuses candidates that run one chain, before any work
    for arm in translation_arms(plan):
        for strength in sorted(t.strengths):
            plan.stages.append(Stage("classifier", f"{arm.label} seed {seed} strength {strength:g}", plan.store,
                                     "planned", f"{epochs} epochs: val QWK picks the strength (winner reused)", epochs,
                                     arm=arm.label, strength=strength))


def effective_strengths(recipe: Recipe) -> dict[float, float]:
    """Nominal -> effective strength (the chain's first timestep + 1, over T) of each candidate in
    ``benchmark.translate.strengths``, with the sampler translation synthesis runs.

    Raises:
        OdmaugError: two candidates run the same chain (identical images under two names).
    """
    from odmaug.augment.from_real import translation_sample
    from odmaug.diffusion.schedule import NoiseSchedule
    from odmaug.diffusion.translate import check_distinct_chains

    s = translation_sample(recipe.sample)
    return check_distinct_chains(NoiseSchedule.from_config(recipe.diffusion), recipe.benchmark.translate.strengths,
                                 s.steps, s.timestep_spacing, "benchmark.translate.strengths")


def translation_arms(plan: Plan) -> list[Arm]:
    """The plan's arms whose images are translations (their kind's synthesis mode) and that choose
    their strength: the first listed per set of images (``odm-translate+corn`` after
    ``odm-translate`` shares its images and strength, as :func:`odmaug.benchmark.synthesis_stage.synthesize` does)."""
    from odmaug.benchmark.arms import BY_TRANSLATION

    first = {}
    for arm in (a for a in plan.arms if a.kind.synthesis == BY_TRANSLATION):
        first.setdefault(arm.synthetic_name, arm)
    return list(first.values())
