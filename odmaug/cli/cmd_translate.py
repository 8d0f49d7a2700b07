"""``odmaug translate`` (real images shown at every grade: SDEdit grade translation, Meng et al. 2022)
and ``odmaug translate-check`` (is that translation trustworthy, judged by a real-data classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.table import Table

from odmaug.cli.app import app
from odmaug.cli.options import GeneratorRunOption, RecipeOptions, recipe_options, sample_options
from odmaug.console import console


@app.command("translate")
@recipe_options("device")
@sample_options("sampler", "steps", "guidance_scale", "eta", "use_ema", "ema_decay")
def translate_command(
    run: GeneratorRunOption,
    sample: dict,
    options: RecipeOptions,
    image: Annotated[List[str], typer.Option("--image", help="Real image to translate (repeatable: one strip each).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Strip PNG to write: the source, then one column per grade.")],
    grades: Annotated[str, typer.Option("--grades", help="Grades to show: 0-4, 0,2,4 or all.")] = "all",
    strength: Annotated[Optional[float], typer.Option(
        "--strength", help="t0 / T in (0, 1]: how much of the source is noised away (default augment.strength).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the forward noise (the same for every grade).")] = 0,
    invert: Annotated[bool, typer.Option(
        "--invert", help="Find the noise by deterministic DDIM inversion instead of drawing it (seed unused).")] = False,
) -> None:
    """Show real images at every grade: noise each to t0 = strength x T, then denoise it with DDIM
    towards each grade (SDEdit). One strip per image; the same seed for every grade, so the
    columns differ only by the grade. Options left out take the run's recipe values, but the
    sampler is DDIM with eta 0 unless --sampler or --eta say otherwise."""
    from odmaug.commands.translate import translation_strips

    done = translation_strips(run, image, out, grades, strength, seed, invert, options.device, sample)
    console.print(f"wrote {done.out}: {done.images} image(s) x {len(done.grades)} grades, {done.sampler} {done.steps} "
                  f"steps, strength {done.strength:g} (effective {done.effective_strength:g})", markup=False)


def check_table(report: dict) -> Table:
    """Per strength: sources, mean Spearman's rho and monotone strips (of the predicted grade, and of
    the expected grade sum_k p_k k), output-to-source feature distance and near copies of test images."""
    out = Table(title=f"grade translation check: {report['sources']['n']} training images x "
                      f"{len(report['grades'])} grades, judged by {report['classifier']['name']}",
                title_justify="left")
    for name in ("strength", "sources", "rho, predicted", "rho, expected", "monotone, predicted (flat)",
                 "monotone, expected", "distance mean ± sd", "near copies"):
        out.add_column(name, justify="right")
    for row in report["by_strength"]:
        pred, expd, dist, near = row["predicted"], row["expected"], row["distance"], row["near_copies"]
        out.add_row(f"{row['strength']:g}", str(row["sources"]), _rho(pred), _rho(expd),
                    f"{pred['monotone']}/{pred['sources']} ({pred['flat']})", f"{expd['monotone']}/{expd['sources']}",
                    f"{_num(dist['mean'])} ± {_num(dist['sd'])} (n {dist['n']})",
                    f"{near['near_copies']}/{near['outputs']}")
    return out


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _rho(path: dict) -> str:
    """Mean rho over the sources where it is defined (a strip whose grade never changes has none)."""
    return f"{_num(path['rho_mean'])} (n {path['rho_n']})"


@app.command("translate-check")
@recipe_options("device")
@sample_options("sampler", "steps", "guidance_scale", "eta", "use_ema", "ema_decay")
def translate_check_command(
    run: GeneratorRunOption,
    sample: dict,
    options: RecipeOptions,
    classifier: Annotated[Path, typer.Option(
        "--classifier", help="Classifier trained on real data (run folder or classifier folder): the judge.")],
    sources: Annotated[int, typer.Option("--sources", help="Training images to translate (stratified over grades).")] = 20,
    strengths: Annotated[str, typer.Option("--strengths", help="Strengths t0 / T in (0, 1], comma separated.")] = "0.4,0.6,0.8",
    grades: Annotated[str, typer.Option("--grades", help="Target grades: all, 0-4 or 0,2,4.")] = "all",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the source draw; source i has noise seed seed + i.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for translation_check.json and strips.png.")] = Path("check"),
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier check in --out.")] = False,
) -> None:
    """Check grade translation: translate real training images to every grade at each strength and
    let a real-data classifier judge them: does the grade rise with the target grade (Spearman's
    rho, monotone strips), how far do outputs move from their source, is any a near copy of a test
    image. Writes translation_check.json and strips.png (middle strength) into --out. Sampling as in
    odmaug translate: the run's recipe values, with DDIM at eta 0 unless --sampler or --eta say otherwise."""
    from odmaug.commands.translation_check import CHECK_FILE, STRIPS_FILE, translation_check

    done = translation_check(run, classifier, out, sources, strengths, grades, seed, options.device, sample, force)
    console.print(check_table(done.report))
    near = done.report["near_copies"]
    console.print(f"near copies overall: {near['near_copies']}/{near['outputs']} outputs closer to a test image than "
                  f"{near['quantile']:g} of test images are to the training split (threshold {_num(near['threshold'])})",
                  markup=False)
    console.print(f"wrote {done.out / CHECK_FILE} and {done.out / STRIPS_FILE}", markup=False)
