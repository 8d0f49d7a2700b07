"""``odmaug train-generator`` and ``odmaug sample``: train ODM/DM and draw labelled sample grids."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from odmaug.cli.app import (
    DataDirOption,
    DeviceOption,
    RecipeOption,
    RunsDirOption,
    SeedOption,
    SetOption,
    app,
    recipe_from_options,
)
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
def train_generator_cmd(
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[List[str]] = SetOption,
    data_dir: Optional[Path] = DataDirOption,
    runs_dir: Optional[Path] = RunsDirOption,
    device: Optional[str] = DeviceOption,
    seed: Optional[int] = SeedOption,
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue this run folder from its last checkpoint (--set train.steps=N to go further)."
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder label (default: the recipe's name)."),
) -> None:
    """Train the ordinal diffusion model (or DM with --set diffusion.ordinal.gamma=0) into a new run folder.

    DDP over K processes (only rank 0 writes); the -- keeps torchrun from parsing odmaug's options:

    torchrun --nproc_per_node K -m odmaug -- train-generator --recipe R.yaml
    """
    from odmaug.device import resolve_device
    from odmaug import distributed as ddp_utils
    from odmaug.diffusion.trainer import check_training_recipe
    from odmaug.runs import check_run_name, create_run, legacy_overrides, open_run, removed_if_it_fails_empty

    if resume is not None and recipe is not None:
        raise OdmaugError("use either --recipe (new run) or --resume RUN (the run's own recipe), not both")
    run = open_run(resume) if resume is not None else None
    sets = [*legacy_overrides(run.config_path), *(overrides or [])] if run else overrides
    cfg = recipe_from_options(run.config_path if run else recipe, sets, data_dir, device, seed)
    check_training_recipe(cfg)  # before any folder is made
    if name is not None:  # on every rank, before DDP starts: a bad --name must not strand the others
        check_run_name(name)
    info = ddp_utils.init_distributed(resolve_device(cfg.device))
    try:
        new = run is None
        if new:
            path = create_run(cfg, runs_dir, name).root if info.is_main else None
            run = open_run(ddp_utils.broadcast_object(path, info))
        # A new run that fails (or is interrupted) before its first checkpoint leaves no folder behind.
        with removed_if_it_fails_empty(run) if new and info.is_main else contextlib.nullcontext():
            _train_and_print(run, cfg, resume is not None, overrides, info.is_main)
    finally:
        ddp_utils.shutdown(info)


def _train_and_print(run, cfg, resume: bool, overrides: Optional[List[str]], is_main: bool) -> None:
    from odmaug.config import dump_recipe
    from odmaug.diffusion.trainer import train_generator
    from odmaug.runs import atomic_write_text

    if is_main:
        console.print(f"run folder: {run.root}", markup=False, highlight=False)

    def record_resume() -> None:
        # Only once the checkpoint has taken the new recipe: one it refuses (another network
        # shape) must leave config.yaml as it was, or `sample` and a plain --resume fail too.
        atomic_write_text(run.config_path, dump_recipe(cfg))
        run.log("resume", overrides=list(overrides or []))

    result = train_generator(run, cfg, resume=resume, on_ready=record_resume if resume else None)
    if is_main:
        if result.steps_this_call == 0:
            console.print(f"{run.root} is already at step {result.step} of {cfg.train.steps}: nothing to do "
                          f"(continue with --resume {run.root} --set train.steps=N)", markup=False)
            return
        grids = sorted((run.root / "generator" / "samples").glob("grid-*.png"))
        console.print(_result_table(result, grids[-1] if grids else None))
        console.print(str(run.root), markup=False, highlight=False)


@app.command("sample")
def sample_cmd(
    run: Path = typer.Option(..., "--run", help="Run folder with a trained generator."),
    out: Path = typer.Option(Path("samples.png"), "--out", "-o", help="Grid PNG to write (one row per grade)."),
    per_grade: int = typer.Option(8, "--per-grade", min=1, max=256, help="Images per grade."),
    sampler: Optional[str] = typer.Option(
        None, "--sampler", help="ddim, ddpm, dpmpp-2m or unipc (default: the run's sample.sampler)."
    ),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Denoising steps (default: the run's)."),
    eta: Optional[float] = typer.Option(None, "--eta", min=0.0, max=1.0, help="DDIM eta (default: the run's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", min=0.0, help="Guidance scale s (1 = conditional)."),
    spacing: Optional[str] = typer.Option(
        None, "--timestep-spacing", help="trailing, leading or linspace (default: the run's sample.timestep_spacing)."
    ),
    seed: int = typer.Option(0, "--seed", help="Image i of the grid uses seed SEED + i."),
    no_ema: bool = typer.Option(False, "--no-ema", help="Use the raw training weights instead of the EMA."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Images denoised together."),
    precision: Optional[str] = typer.Option(None, "--precision", help="auto, bf16, fp16 or fp32 (default: the run's)."),
    compile: Optional[bool] = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the network (default: the run's sample.compile)."
    ),
    device: Optional[str] = DeviceOption,
) -> None:
    """Draw PER_GRADE images of every grade from a trained generator into a labelled grid."""
    from odmaug.data import to_uint8
    from odmaug.device import resolve_device
    from odmaug.diffusion import generate, load_generator
    from odmaug.figures import grade_grid
    from odmaug.runs import check_writable

    if out.suffix.lower() != ".png":
        raise OdmaugError(f"--out must be a .png file (got {out})")
    check_writable(out)  # before the generator is loaded and sampled
    loaded = load_generator(run, use_ema=not no_ema, device=resolve_device(device or "auto"))
    s = loaded.recipe.sample
    sampler, steps = sampler or s.sampler, steps or s.steps
    eta = s.eta if eta is None else eta
    guidance = s.guidance_scale if guidance is None else guidance
    spacing = spacing or s.timestep_spacing
    labels = [g for g in range(loaded.num_classes) for _ in range(per_grade)]
    started = time.perf_counter()
    images = generate(
        loaded.model, loaded.schedule, labels, [seed + i for i in range(len(labels))], sampler=sampler, steps=steps,
        eta=eta, guidance_scale=guidance, clip_x0=s.clip_x0, timestep_spacing=spacing, batch_size=batch_size or s.batch_size,
        device=next(loaded.model.parameters()).device, precision=precision or s.precision, show_progress=True,
        compile=s.compile if compile is None else compile,
    )
    seconds = time.perf_counter() - started
    rows = list(to_uint8(images).view(loaded.num_classes, per_grade, *images.shape[1:]))
    weights = "EMA" if not no_ema else "raw"
    grade_grid(rows, out, title=f"{Path(run).name} step {loaded.step} ({weights}, {sampler} {steps}, s={guidance})")
    console.print(
        f"wrote {out}: {len(labels)} images ({per_grade} per grade) from step {loaded.step} "
        f"(checkpoint {loaded.checkpoint_id}), {sampler} {steps} steps, guidance {guidance}, "
        f"{seconds:.1f} s ({len(labels) / seconds:.2f} img/s)",
        markup=False,
    )
