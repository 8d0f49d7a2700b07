"""Stage 1, generators: train (or resume, or reuse) the generator of every arm that needs one.

Each generator is its arm's recipe change applied to the benchmark's recipe (DM: the ordinal
weight at zero), trained in its store folder (:func:`odmaug.benchmark.store.generator_folder`).
"""

from __future__ import annotations

from typing import Optional

from odmaug.atomic import atomic_write_text
from odmaug.benchmark.stage import Plan, Splits, Stage, say
from odmaug.benchmark.store import generator_folder, generator_status, store_run
from odmaug.config import Recipe, dump_recipe
from odmaug.console import is_main_process
from odmaug.data import ImageTable, write_manifest
from odmaug.data.folds import check_no_leakage

TRAIN_IMAGES = "train_images.csv"
"""A cross-validation fold's generator folder records the images it trains on (path, grade)."""


def plan_generators(plan: Plan, recipe: Recipe, splits: Splits) -> None:
    """Pick each generator's folder (``plan.generators``) and add its stage: new, resumed or reused."""
    steps = recipe.train.steps
    for name, arm in plan.generator_arms().items():
        root = plan.generators[name] = generator_folder(plan.store, name, arm.kind.generator.recipe(recipe), splits)
        status, step = generator_status(root, steps)
        since = f" from step {step}" if status == "resume" else ""
        left = max(0, steps - step)
        plan.stages.append(Stage("generator", name, root, status, f"{left} of {steps} steps{since}", left))


def _fold_training_images(run, splits: Splits) -> Optional[ImageTable]:
    """A fold's generator trains on the fold's training part only, recorded beside it
    (``train_images.csv``) and checked against the fold's test part; None for holdout."""
    if splits.fold is None:
        return None
    check_no_leakage(splits.train.frame["path"], splits.test.frame["path"], "generator")
    if is_main_process() and not (run.root / TRAIN_IMAGES).is_file():
        write_manifest(splits.train.frame[["path", "label"]], run.root / TRAIN_IMAGES)
    return splits.train


def train_generators(plan: Plan, recipe: Recipe, splits: Splits, show_progress: bool, context=None) -> None:
    """Train every planned generator to ``train.steps`` (continuing a stored shorter run) on
    ``splits.train`` (the data's train split for holdout, a fold's training part for cv)."""
    from odmaug.diffusion.trainer import train_generator

    for name, arm in plan.generator_arms().items():
        g_recipe = arm.kind.generator.recipe(recipe)
        root = plan.generators[name]
        run = store_run(root, g_recipe)
        steps = g_recipe.train.steps
        status, step = generator_status(root, steps)
        what = {"new": f"new, {steps} steps", "resume": f"resume from step {step} to {steps}",
                "reuse": f"reuse (step {step})"}[status]
        say(f"generator {name} (gamma = {g_recipe.diffusion.ordinal.gamma:g}): {what}, {root}")
        if status != "reuse":
            # A continued run's config.yaml must name its new train.steps; rewritten (on rank 0)
            # only once the checkpoint has taken the recipe, as `train-generator --resume` does.
            record = (lambda: atomic_write_text(run.config_path, dump_recipe(g_recipe))) if status == "resume" else None
            train_generator(run, g_recipe, resume=status == "resume", show_progress=show_progress, on_ready=record,
                            context=context, train=_fold_training_images(run, splits))
