"""``odmaug train-generator`` and ``odmaug sample``: train ODM/DM and draw labelled sample grids."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from odmaug.cli.app import app
from odmaug.cli.options import GeneratorRunOption, RecipeOptions, recipe_options, sample_options
from odmaug.console import console
from odmaug.errors import OdmaugError


def _result_table(result, grid: Optional[Path]) -> Table:
    table = Table(title="generator training", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("run", str(result.run))
    table.add_row("steps", f"{result.step} ({result.steps_this_call} in this call)")
    table.add_row("wall time", f"{result.seconds:.1f} s")
    table.add_row("speed", f"{result.images_per_second:.1f} img/s")
    table.add_row("peak memory", f"{result.peak_memory_mb:.0f} MiB")
    table.add_row("precision", result.precision)
    if result.world_size > 1:
        table.add_row("processes", str(result.world_size))
    if grid is not None:
        table.add_row("last sample grid", str(grid))
    return table


@app.command("train-generator")
@recipe_options()
def train_generator_cmd(
    options: RecipeOptions,
    resume: Annotated[Optional[Path], typer.Option(
        "--resume", help="Continue this run folder from its last checkpoint (--set train.steps=N to go further).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run folder label (default: the recipe's name).")] = None,
) -> None:
    """Train the ordinal diffusion model (or DM with --set diffusion.ordinal.gamma=0) into a new run folder.

    DDP over K processes (only rank 0 writes); the -- keeps torchrun from parsing odmaug's options:

    torchrun --nproc_per_node K -m odmaug -- train-generator --recipe R.yaml
    """
    from odmaug.commands.train_generator import train_generator_run
    from odmaug.runs import legacy_overrides, open_run

    if resume is not None and options.recipe is not None:
        raise OdmaugError("use either --recipe (new run) or --resume RUN (the run's own recipe), not both")
    run = open_run(resume) if resume is not None else None
    cfg = options.load(run.config_path, legacy_overrides(run.config_path)) if run else options.load()
    done = train_generator_run(cfg, run, options.runs_dir, name, options.overrides or (), on_run=lambda r: console.print(
        f"run folder: {r.root}", markup=False, highlight=False))
    if not done.is_main:
        return
    if done.result.steps_this_call == 0:
        console.print(f"{done.run.root} is already at step {done.result.step} of {cfg.train.steps}: nothing to do "
                      f"(continue with --resume {done.run.root} --set train.steps=N)", markup=False)
        return
    console.print(_result_table(done.result, done.last_grid))
    console.print(str(done.run.root), markup=False, highlight=False)


@app.command("sample")
@recipe_options("device")
@sample_options()
def sample_cmd(
    run: GeneratorRunOption,
    sample: dict,
    options: RecipeOptions,
    out: Annotated[Path, typer.Option("--out", "-o", help="Grid PNG to write (one row per grade).")] = Path("samples.png"),
    per_grade: Annotated[int, typer.Option("--per-grade", min=1, max=256, help="Images per grade.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Image i of the grid uses seed SEED + i.")] = 0,
) -> None:
    """Draw PER_GRADE images of every grade from a trained generator into a labelled grid.

    Sampling options left out take the run's recipe values (its sample section).
    """
    from odmaug.commands.sample import sample_grid_for_run

    grid = sample_grid_for_run(run, out, per_grade, seed, options.device, sample)
    s = grid.settings
    console.print(
        f"wrote {grid.out}: {grid.images} images ({grid.per_grade} per grade) from step {grid.step} "
        f"(checkpoint {grid.checkpoint_id}), {s.sampler} {s.steps} steps, guidance {s.guidance_scale}, "
        f"{grid.seconds:.1f} s ({grid.images / grid.seconds:.2f} img/s)",
        markup=False,
    )
