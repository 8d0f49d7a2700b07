"""``odmaug translate``: real images shown at every grade (SDEdit grade translation, Meng et al. 2022)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List

import typer

from odmaug.cli.app import app
from odmaug.cli.options import RecipeOptions, Run, recipe_options, sample_options
from odmaug.console import console


@app.command("translate")
@recipe_options("device")
@sample_options("steps", "guidance_scale", "use_ema")
def translate_command(
    run: Run,
    sample: dict,
    options: RecipeOptions,
    image: Annotated[List[str], typer.Option("--image", help="Real image to translate (repeatable: one strip each).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Strip PNG to write: the source, then one column per grade.")],
    grades: Annotated[str, typer.Option("--grades", help="Grades to show: 0-4, 0,2,4 or all.")] = "all",
    strength: Annotated[float, typer.Option(
        "--strength", help="t0 / T in (0, 1]: how much of the source is noised away.")] = 0.6,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the forward noise (the same for every grade).")] = 0,
    invert: Annotated[bool, typer.Option(
        "--invert", help="Find the noise by deterministic DDIM inversion instead of drawing it (seed unused).")] = False,
) -> None:
    """Show real images at every grade: noise each to t0 = strength x T, then denoise it with DDIM
    towards each grade (SDEdit). One strip per image; the same seed for every grade, so the
    columns differ only by the grade. Options left out take the run's recipe values."""
    from odmaug.diffusion.grids import translation_strips

    done = translation_strips(run, image, out, grades, strength, seed, invert, options.device, sample)
    console.print(f"wrote {done.out}: {done.images} image(s) x {len(done.grades)} grades, DDIM {done.steps} steps",
                  markup=False)
