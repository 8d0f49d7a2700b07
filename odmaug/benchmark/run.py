"""``odmaug benchmark`` end to end: plan, then each stage in order, once per pass (holdout: one; cv: one per fold)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from odmaug.benchmark.classifiers import train_classifiers
from odmaug.benchmark.generators import train_generators
from odmaug.benchmark.plan import make_plan, merge_plans, plan_table
from odmaug.benchmark.protocol import benchmark_splits
from odmaug.benchmark.results import Pass, collect_results
from odmaug.benchmark.selection import filter_classifier
from odmaug.benchmark.stage import Plan, Splits, say
from odmaug.benchmark.synthesis import synthesize
from odmaug.config import Recipe
from odmaug.console import console
from odmaug.data import load_table
from odmaug.runs import Run, create_run, default_runs_dir


def _print_plan(plan: Plan) -> None:
    console.print(plan_table(plan))
    if plan.note:
        console.print(plan.note, markup=False, highlight=False)


def _benchmark_run(recipe: Recipe, base: Path, plan: Plan, dist) -> Run:
    """The benchmark's run folder: made (and the plan printed and logged) on rank 0, named to every rank."""
    from odmaug.distributed import broadcast_object

    bench_run = None
    if dist.is_main:
        bench_run = create_run(recipe, base, f"benchmark-{recipe.name}")
        _print_plan(plan)
        bench_run.log("benchmark_plan", stages=plan.records())
    return Run(Path(broadcast_object(str(bench_run.root) if bench_run else None, dist)))


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


def run_benchmark(recipe: Recipe, runs_dir: Optional[str | Path] = None, device: str = "auto",
                  dry_run: bool = False, show_progress: bool = True, estimate: bool = True) -> tuple[Optional[Run], dict[str, Any]]:
    """Run (or plan, with ``dry_run``) the whole benchmark of ``recipe``; a dry run with ``estimate``
    also times each stage from a short probe on this machine (:mod:`odmaug.benchmark.estimate`).

    ``benchmark.protocol: cv`` runs the stages once per fold (:mod:`odmaug.benchmark.protocol`)
    and pools the folds' results. Translation arms choose their strength on each pass's
    validation split, and ``benchmark.filter`` trains the real arm's first classifier before
    synthesis (:mod:`odmaug.benchmark.selection`).

    Returns:
        The benchmark's run folder (None for a dry run) and the results dict written to
        ``<run>/results.json`` (for a dry run: ``{"plan": [...]}``; on ranks other than 0: ``{}``).

    Raises:
        OdmaugError: any input the plan refuses (see :func:`odmaug.benchmark.plan.make_plan`),
            real data without validation or test images (holdout), or too few images for the folds (cv).
    """
    from odmaug.device import resolve_device
    from odmaug.distributed import init_distributed, shutdown

    started = time.perf_counter()
    base = default_runs_dir(runs_dir)
    passes = benchmark_splits(recipe, load_table(recipe.data))
    plans = [make_plan(recipe, base / "store", splits) for splits in passes]
    shown = merge_plans(plans)
    if dry_run:
        if estimate:
            from odmaug.benchmark.estimate import estimate_plan

            estimate_plan(shown, recipe, passes, plans, resolve_device(device))
        _print_plan(shown)
        return None, {"plan": shown.records()}

    context = init_distributed(resolve_device(device))
    try:
        bench_run = _benchmark_run(recipe, base, shown, context)
        progress = show_progress and context.is_main
        done = [_run_pass(plan, splits, recipe, bench_run, context, progress) for plan, splits in zip(plans, passes)]
        if not context.is_main:
            return bench_run, {}
        return bench_run, collect_results(recipe, done, bench_run, context.device, started)
    finally:
        shutdown(context)
