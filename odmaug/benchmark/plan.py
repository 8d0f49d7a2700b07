"""The benchmark's planning step: every input checked and every stage decided before any work.

:func:`make_plan` runs first, for ``--dry-run`` and for a real run alike, and writes nothing. It
fails (one :class:`~odmaug.errors.OdmaugError` line) on anything that would otherwise stop the
benchmark later, after generators have trained for hours: a classifier or generator that cannot
run at the image size, or an ``external:<name>=<path>`` arm whose folder or manifest is missing,
unreadable or empty. The caller has loaded the recipe's data already (that is the first check).
Each stage module adds its own stages (``plan_<stage>``); where they live is
:mod:`odmaug.benchmark.store`'s part.
"""

from __future__ import annotations

from pathlib import Path

from odmaug.benchmark.externals import load_externals
from odmaug.benchmark.arm_specs import parse_arm
from odmaug.benchmark.classifiers import plan_classifiers
from odmaug.benchmark.generator_metrics import plan_metrics
from odmaug.benchmark.generators import plan_generators
from odmaug.benchmark.judge import plan_judge
from odmaug.benchmark.selection import plan_filter, plan_selection
from odmaug.benchmark.stage import Plan, Splits
from odmaug.benchmark.synthesis_stage import plan_synthesis
from odmaug.config import Recipe


def make_plan(recipe: Recipe, store: Path, splits: Splits) -> Plan:
    """Check every input and decide every stage and whether it is new, resumed or reused.

    Raises:
        OdmaugError: the classifier or (with generator arms) the generator cannot run at the
            recipe's image size, another generator setting cannot train, or an external arm's
            images cannot be used, or translation source grades without training images;
            checked before anything is written.
    """
    from odmaug.classify.models import check_classifier
    from odmaug.diffusion.trainer import check_training_recipe

    from odmaug.benchmark.remedies import arm_recipe

    arms = [parse_arm(spec) for spec in recipe.benchmark.arms]
    for arm in arms:  # an arm's own classifier options (remedy arms) must fit the recipe's section
        arm_recipe(recipe, arm)
    check_classifier(recipe.classifier.model, recipe.data.num_classes, recipe.image_size("classifier"),
                     recipe.classifier.pretrained)
    if any(arm.kind.generator is not None for arm in arms):
        # the generators differ only in recipe changes that do not change the network (the ordinal weight)
        check_training_recipe(recipe)
    plan = Plan(arms, store, load_externals(arms, recipe.data))
    plan_generators(plan, recipe, splits)
    plan_filter(plan, recipe)  # benchmark.filter: the real arm's first classifier, before synthesis
    plan_synthesis(plan, recipe, splits)
    plan_selection(plan, recipe)  # translation arms: one classifier per candidate strength
    plan_classifiers(plan, recipe, splits)
    if splits.fold is None or splits.fold == 0:  # cv: generative metrics on the first fold only
        plan_judge(plan, recipe)
        plan_metrics(plan, recipe)
    for stage in plan.stages:
        stage.fold = splits.fold
    return plan


def merge_plans(plans: list[Plan]) -> Plan:
    """One plan to print and log for several passes (cross-validation folds): every pass's stages in order."""
    if len(plans) == 1:
        return plans[0]
    first = plans[0]
    return Plan(first.arms, first.store, first.externals, stages=[s for p in plans for s in p.stages])


def format_duration(seconds: float) -> str:
    """``~40 s``, ``~12 min``, ``~2.5 h``: an estimate's precision, no more."""
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def plan_table(plan: Plan):
    """The plan as a rich table; with estimates, a ``time`` column and a total row; with
    cross-validation folds, a ``fold`` column."""
    from rich.table import Table

    timed = any(s.seconds is not None for s in plan.stages)
    folds = any(s.fold is not None for s in plan.stages)
    table = Table(title=f"benchmark plan (store: {plan.store})", title_justify="left")
    for col in (*(["fold"] if folds else []), "stage", "what", "status", "work", *(["time"] if timed else []), "where"):
        table.add_column(col)
    for s in plan.stages:
        time_cell = [format_duration(s.seconds) if s.seconds is not None else "-"] if timed else []
        fold_cell = [str(s.fold) if s.fold is not None else ""] if folds else []
        table.add_row(*fold_cell, s.kind, s.name, s.status, s.work, *time_cell, s.path.name)
    if timed:
        total = sum(s.seconds or 0.0 for s in plan.stages)
        table.add_section()
        table.add_row(*([""] if folds else []), "total", "", "", "", format_duration(total), "")
    return table
