"""``odmaug benchmark`` end to end: plan, then the passes (:mod:`odmaug.benchmark.passes`) in this process, or as stage jobs (:mod:`odmaug.benchmark.executor`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from odmaug.benchmark.passes import benchmark_run, print_plan, run_passes
from odmaug.benchmark.plan import make_plan, merge_plans
from odmaug.benchmark.protocol import benchmark_splits
from odmaug.config import Recipe
from odmaug.data import load_table
from odmaug.runs import Run, default_runs_dir


def run_benchmark(recipe: Recipe, runs_dir: Optional[str | Path] = None, device: str = "auto",
                  dry_run: bool = False, show_progress: bool = True, estimate: bool = True,
                  executor: Optional[str] = None) -> tuple[Optional[Run], dict[str, Any]]:
    """Run (or plan, with ``dry_run``) the whole benchmark of ``recipe``; a dry run with ``estimate``
    also times each stage from a short probe on this machine (:mod:`odmaug.benchmark.estimate`).

    ``executor`` (``local`` or ``slurm``) runs the stages as submitit jobs instead of in this
    process (:mod:`odmaug.benchmark.executor`); None runs them here (under torchrun: over the ranks).

    ``benchmark.protocol: cv`` runs the stages once per fold (:mod:`odmaug.benchmark.protocol`)
    and pools the folds' results. Translation arms choose their strength on each pass's
    validation split, and ``benchmark.filter`` trains the real arm's first classifier before
    synthesis (:mod:`odmaug.benchmark.selection`).

    Returns:
        The benchmark's run folder (None for a dry run) and the results dict written to
        ``<run>/results.json`` (for a dry run: ``{"plan": [...]}``; on ranks other than 0: ``{}``).

    Raises:
        OdmaugError: any input the plan refuses (see :func:`odmaug.benchmark.plan.make_plan`),
            real data without validation or test images (holdout), or too few images for the folds (cv);
            with ``executor``: another name than ``local``/``slurm``, submitit missing, no Slurm here,
            or a stage job that failed (naming it and its log).
    """
    from odmaug.device import resolve_device
    from odmaug.distributed import init_distributed, shutdown

    started = time.perf_counter()
    if executor is not None:
        from odmaug.benchmark.executor import check_executor

        check_executor(executor, dry_run)  # before any data is read or anything written
    base = default_runs_dir(runs_dir)
    passes = benchmark_splits(recipe, load_table(recipe.data))
    plans = [make_plan(recipe, base / "store", splits) for splits in passes]
    shown = merge_plans(plans)
    if dry_run:
        if estimate:
            from odmaug.benchmark.estimate import estimate_plan

            estimate_plan(shown, recipe, passes, plans, resolve_device(device))
        print_plan(shown)
        return None, {"plan": shown.records()}

    if executor is not None:
        from odmaug.benchmark.executor import run_with_executor

        return run_with_executor(recipe, base, plans, passes, shown, executor, device)  # job logs: no progress bars
    context = init_distributed(resolve_device(device))
    try:
        bench_run = benchmark_run(recipe, base, shown, context)
        progress = show_progress and context.is_main
        return bench_run, run_passes(recipe, plans, passes, bench_run, context, progress, started)
    finally:
        shutdown(context)
