"""``odmaug benchmark``: real vs oversampling vs DM vs ODM augmentation, one command, one report."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from odmaug.cli.app import app
from odmaug.cli.options import RecipeOptions, recipe_options


@app.command("benchmark")
@recipe_options("recipe", "overrides", "data_dir", "runs_dir", "device", "log")
def benchmark(
    options: RecipeOptions,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check every input, print the plan (stages, what is reused, work left, estimated times) and stop.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    estimate: Annotated[bool, typer.Option(
        "--estimate/--no-estimate",
        help="With --dry-run: time each stage from a short probe on this machine (a few steps of each network).")] = True,
    executor: Annotated[Optional[str], typer.Option(
        "--executor", metavar="slurm|local",
        help="Run the stages as scheduler jobs through submitit (pip install \"odmaug\\[slurm]\"): slurm "
             "(sbatch, resources per stage kind from benchmark.executor.*) or local (processes on this "
             "machine). Default: every stage in this process.")] = None,
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

    On a Slurm cluster, --executor slurm submits one job per generator, set of synthetic images,
    classifier (arm x seed x fold) and one for the results, wave by wave, each with a lock on its
    stage in the store; a failed or killed job is named with its log, and the same command again
    resumes it: odmaug benchmark --recipe R.yaml --executor slurm
    """
    from odmaug.benchmark import run_benchmark

    cfg = options.load()
    run_benchmark(cfg, options.runs_dir, cfg.device, dry_run=dry_run, show_progress=not quiet, estimate=estimate,
                  executor=executor)
