"""``odmaug benchmark`` end to end: plan, then each stage in order, on the recipe's real splits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from odmaug.benchmark.classifiers import train_classifiers
from odmaug.benchmark.generators import train_generators
from odmaug.benchmark.plan import make_plan, plan_table
from odmaug.benchmark.results import collect_results
from odmaug.benchmark.stage import Plan, Splits
from odmaug.benchmark.synthesis import synthesis_counts, synthesize
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


def run_benchmark(recipe: Recipe, runs_dir: Optional[str | Path] = None, device: str = "auto",
                  dry_run: bool = False, show_progress: bool = True, estimate: bool = True) -> tuple[Optional[Run], dict[str, Any]]:
    """Run (or plan, with ``dry_run``) the whole benchmark of ``recipe``; a dry run with ``estimate``
    also times each stage from a short probe on this machine (:mod:`odmaug.benchmark.estimate`).

    Returns:
        The benchmark's run folder (None for a dry run) and the results dict written to
        ``<run>/results.json`` (for a dry run: ``{"plan": [...]}``; on ranks other than 0: ``{}``).

    Raises:
        OdmaugError: any input the plan refuses (see :func:`odmaug.benchmark.plan.make_plan`), or
            real data without validation or test images.
    """
    from odmaug.device import resolve_device
    from odmaug.distributed import init_distributed, shutdown

    started = time.perf_counter()
    base = default_runs_dir(runs_dir)
    splits = Splits.of(load_table(recipe.data))
    plan = make_plan(recipe, base / "store", splits)
    if dry_run:
        if estimate:
            from odmaug.benchmark.estimate import estimate_plan

            estimate_plan(plan, recipe, splits, resolve_device(device), synthesis_counts(recipe, splits.train.counts()))
        _print_plan(plan)
        return None, {"plan": plan.records()}

    dist = init_distributed(resolve_device(device))
    try:
        bench_run = _benchmark_run(recipe, base, plan, dist)
        progress = show_progress and dist.is_main
        train_generators(plan, recipe, progress)
        synthetic = synthesize(plan, recipe, splits, device, progress)
        classifiers = train_classifiers(plan, recipe, splits, synthetic, bench_run, device, progress, dist)
        if not dist.is_main:
            return bench_run, {}
        return bench_run, collect_results(recipe, plan, splits, synthetic, classifiers, bench_run, device, started)
    finally:
        shutdown(dist)
