"""Stage 1, generators: train (or resume, or reuse) the generator of every arm that needs one.

Each generator is its arm's recipe change applied to the benchmark's recipe (DM: the ordinal
weight at zero), trained in its store folder (:func:`odmaug.benchmark.store.generator_folder`).
"""

from __future__ import annotations

from odmaug.atomic import atomic_write_text
from odmaug.benchmark.stage import Plan, Stage, say
from odmaug.benchmark.store import generator_folder, generator_status, store_run
from odmaug.config import Recipe, dump_recipe


def plan_generators(plan: Plan, recipe: Recipe) -> None:
    """Pick each generator's folder (``plan.generators``) and add its stage: new, resumed or reused."""
    steps = recipe.train.steps
    for name, arm in plan.generator_arms().items():
        root = plan.generators[name] = generator_folder(plan.store, name, arm.kind.generator.recipe(recipe))
        status, step = generator_status(root, steps)
        since = f" from step {step}" if status == "resume" else ""
        left = max(0, steps - step)
        plan.stages.append(Stage("generator", name, root, status, f"{left} of {steps} steps{since}", left))


def train_generators(plan: Plan, recipe: Recipe, show_progress: bool) -> None:
    """Train every planned generator to ``train.steps`` (continuing a stored shorter run)."""
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
            train_generator(run, g_recipe, resume=status == "resume", show_progress=show_progress, on_ready=record)
