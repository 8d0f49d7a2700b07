"""``odmaug benchmark``: real vs oversampling vs DM vs ODM augmentation, one command, one report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from odmaug.cli.app import DataDirOption, DeviceOption, RecipeOption, RunsDirOption, SetOption, app, recipe_from_options


@app.command("benchmark")
def benchmark(
    recipe: Optional[Path] = RecipeOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check every input, print the plan (stages, what is reused, work left, estimated times) and stop."),
    overrides: Optional[List[str]] = SetOption,
    data_dir: Optional[Path] = DataDirOption,
    runs_dir: Optional[Path] = RunsDirOption,
    device: Optional[str] = DeviceOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    estimate: bool = typer.Option(
        True, "--estimate/--no-estimate",
        help="With --dry-run: time each stage from a short probe on this machine (a few steps of each network).",
    ),
) -> None:
    """Does augmentation help? QWK/accuracy per arm (real, oversample, DM, ODM) beside FID/KID.

    Trains DM and ODM, synthesizes the scarce grades, trains the same classifier on every arm and
    seed, and writes report/report.md and a self-contained report/report.html.

    Finished stages are reused from <runs-dir>/store (keyed by a hash of their inputs), so an
    interrupted benchmark resumes where it stopped, and a larger train.steps continues the stored
    generators (a smaller one trains anew: a longer run is never cut back).

    Over K processes generators train with DDP, synthesis is sharded and classifier jobs are spread over
    the ranks; the -- keeps torchrun from parsing odmaug's options:

    torchrun --nproc_per_node K -m odmaug -- benchmark --recipe R.yaml
    """
    from odmaug.benchmark import run_benchmark

    cfg = recipe_from_options(recipe, overrides, data_dir, device)
    run_benchmark(cfg, runs_dir, cfg.device, dry_run=dry_run, show_progress=not quiet, estimate=estimate)
