"""One benchmark pass's stages in order (holdout: one pass; cv: one per fold), then the results:
what ``odmaug benchmark`` runs in its own process, and what its ``--executor`` results job runs
once the stage jobs have filled the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odmaug.benchmark.classifiers import train_classifiers
from odmaug.benchmark.generators import train_generators
from odmaug.benchmark.plan import plan_table
from odmaug.benchmark.results import Pass, collect_results
from odmaug.benchmark.selection import filter_classifier
from odmaug.benchmark.stage import Plan, Splits, say
from odmaug.benchmark.synthesis_stage import synthesize
from odmaug.config import Recipe
from odmaug.console import console
from odmaug.runs import Run, create_run


def print_plan(plan: Plan) -> None:
    console.print(plan_table(plan))
    if plan.note:
        console.print(plan.note, markup=False, highlight=False)


def benchmark_run(recipe: Recipe, base: Path, plan: Plan, context) -> Run:
    """The benchmark's run folder: made (and the plan printed and logged) on rank 0, named to every rank."""
    from odmaug.distributed import broadcast_object

    bench_run = None
    if context.is_main:
        bench_run = create_run(recipe, base, f"benchmark-{recipe.name}")
        print_plan(plan)
        bench_run.log("benchmark_plan", stages=plan.records())
    return Run(Path(broadcast_object(str(bench_run.root) if bench_run else None, context)))


def _run_pass(plan: Plan, splits: Splits, recipe: Recipe, bench_run: Run, context, progress: bool) -> Pass:
    """Every stage of one pass (the holdout's, or one fold's), in order."""
    if splits.fold is not None:
        say(f"fold {splits.fold}: {len(splits.train)} training, {len(splits.val)} val, {len(splits.test)} test images")
    train_generators(plan, recipe, splits, progress, context)
    # benchmark.filter: the real arm's first classifier grades the synthetic images, so it trains first
    grade_filter = filter_classifier(plan, recipe, splits, context, progress)
    synthetic, strengths = synthesize(plan, recipe, splits, context, progress, grade_filter)
    classifiers = train_classifiers(plan, recipe, splits, synthetic, bench_run, context.device, progress, context)
    return Pass(plan, splits, synthetic, classifiers, strengths)


def run_passes(recipe: Recipe, plans: list[Plan], passes: list[Splits], bench_run: Run, context, progress: bool,
               started: float) -> dict[str, Any]:
    """Every pass's stages in order, then the results (on rank 0; ``{}`` on the other ranks). Stages
    already in the store are reused, so after ``--executor``'s stage jobs this only measures and reports."""
    done = [_run_pass(plan, splits, recipe, bench_run, context, progress) for plan, splits in zip(plans, passes)]
    if not context.is_main:
        return {}
    return collect_results(recipe, done, bench_run, context.device, started)
