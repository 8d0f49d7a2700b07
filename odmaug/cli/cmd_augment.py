"""``odmaug augment`` (synthesize scarce grades) and ``odmaug balance`` (merge into a balanced set)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import pandas as pd
import typer
from rich.table import Table

from odmaug.cli.app import DataDirOption, DeviceOption, RecipeOption, SetOption, app, recipe_from_options
from odmaug.console import console, warn
from odmaug.data import ImageTable, load_table, table_from_spec, write_manifest
from odmaug.data.balance import STRATEGIES, balance, shortfall_messages


def balance_table(counts: pd.DataFrame, strategy: str, title: str) -> Table:
    """A rich table: per grade, training images before and after balancing."""
    kind = "oversampled" if strategy == "oversample" else "synthetic"
    out = Table(title=title, title_justify="left")
    for name in ("grade", "real", f"+{kind}", "after", "share", "target", "short"):
        out.add_column(name, justify="right")
    for row in counts.itertuples(index=False):
        short = f"[yellow]{row.shortfall}[/]" if row.shortfall > 0 else "0"
        out.add_row(
            str(row.grade), str(row.real), str(row.added), str(row.total),
            f"{row.added_share:.0%}", str(row.target), short,
        )
    out.add_row(
        "all", str(counts["real"].sum()), str(counts["added"].sum()), str(counts["total"].sum()),
        f"{counts['added'].sum() / max(1, counts['total'].sum()):.0%}", "", str(counts["shortfall"].sum()),
        style="bold",
    )
    return out


@app.command("balance")
def balance_command(
    out: Path = typer.Option(..., "--out", "-o", help="Balanced manifest CSV to write, e.g. runs/X/datasets/odm.csv."),
    synthetic: Optional[List[str]] = typer.Option(
        None, "--synthetic", help="Synthetic manifest .csv (or folder <grade>/*.png) to draw from (repeatable)."
    ),
    strategy: Optional[str] = typer.Option(
        None, "--strategy", help=f"{' | '.join(STRATEGIES)} (default: the recipe's augment.strategy)."
    ),
    to_count: Optional[int] = typer.Option(None, "--to-count", help="Training images per grade (to-count, oversample)."),
    max_share: Optional[float] = typer.Option(
        None, "--max-synthetic-share", help="Cap on the share of added images per grade, in (0, 1]."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the picks (default: the recipe's seed)."),
    recipe: Optional[Path] = RecipeOption,
    overrides: Optional[List[str]] = SetOption,
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """Merge the recipe's real data with synthetic manifests (or real repeats) into one balanced manifest.

    Real images are never dropped; validation and test rows stay the real ones. Prints the
    per-grade counts before and after, and warns when a grade cannot reach its target.
    """
    cfg = recipe_from_options(recipe, overrides, data_dir, seed=seed)
    strategy = strategy or cfg.augment.strategy
    if to_count is None and strategy != "match-majority":
        to_count = cfg.augment.to_count  # the recipe's count only where the strategy uses one
    share = cfg.augment.max_synthetic_share if max_share is None else max_share
    real = load_table(cfg.data)
    pools: list[ImageTable] = [table_from_spec(spec, cfg.data) for spec in synthetic or []]
    merged, counts = balance(real, pools, strategy, to_count, share, cfg.seed)
    console.print(balance_table(counts, strategy, f"{real.name} training split: {strategy}"))
    for line in shortfall_messages(counts, strategy, share):
        warn(line)
    write_manifest(merged, out)
    others = ", ".join(f"{s} {len(merged.split(s))} (real only)" for s in merged.splits() if s != "train")
    console.print(f"wrote {out}: train {len(merged.split('train'))}{', ' + others if others else ''}")


def synthesis_table(summary) -> Table:
    """A rich table: per grade, images asked for, already there, generated now, in the manifest
    (and the real training count beside it when the plan used it)."""
    real = summary.real_counts
    out = Table(title=f"synthesis into {summary.out_dir}", title_justify="left")
    names = ["grade", *(["real (train)"] if real else []), "requested", "already there", "generated", "in manifest"]
    names += ["rejected by filter"] if summary.filtered_out else []
    names += ["real + manifest"] if real else []
    for name in names:
        out.add_column(name, justify="right")
    grades = sorted(set(summary.requested) | set(summary.manifest_counts) | set(real or {}))
    for g in grades:
        asked = summary.requested.get(g)
        made = summary.generated_per_grade.get(g, 0)
        in_manifest = summary.manifest_counts.get(g, 0)
        row = [str(g), *([str(real[g])] if real else []), "-" if asked is None else str(asked),
               "-" if asked is None else str(asked - made), str(made), str(in_manifest)]
        row += [str(summary.filtered_out.get(g, 0))] if summary.filtered_out else []
        row += [str(real[g] + in_manifest)] if real else []
        out.add_row(*row)
    return out


def write_grid(manifest: Path, path: Path, per_grade: int = 8) -> Path:
    """A grid of the first ``per_grade`` images (lowest seeds) of every grade in a synthesis folder's manifest."""
    import numpy as np
    from PIL import Image

    from odmaug.figures import grade_grid

    import json

    frame = pd.read_csv(manifest)
    record = json.loads((manifest.parent / "synthesis.json").read_text())
    ident = record["identity"]
    title = (f"{record['generator_run']} step {record['step']}: {ident['sampler']} {ident['steps']} steps, "
             f"guidance {ident['guidance_scale']:g}")
    rows, labels = [], []
    for grade, part in frame.sort_values(["label", "seed"]).groupby("label"):
        images = [np.asarray(Image.open(manifest.parent / p).convert("RGB")) for p in part["path"][:per_grade]]
        rows.append(np.stack(images))
        labels.append(f"grade {grade}")
    return grade_grid(rows, path, row_labels=labels, title=title)


@app.command("augment")
def augment_command(
    run: Path = typer.Option(..., "--run", help="Generator run folder (made by odmaug train-generator)."),
    target_class: Optional[str] = typer.Option(
        None, "--target-class", "-c", help="Grade(s) to synthesize: 4, 3,4 or auto (every grade below the target count)."
    ),
    n: Optional[int] = typer.Option(None, "--n", help="Images per chosen grade."),
    to_count: Optional[int] = typer.Option(
        None, "--to-count", help="Fill each chosen grade up to M images, counting the real training images."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default <run>/synthetic)."),
    seed_start: Optional[int] = typer.Option(None, "--seed-start", help="First seed of every grade."),
    sampler: Optional[str] = typer.Option(
        None, "--sampler", help="ddim, ddpm, dpmpp-2m or unipc (default: the run's recipe)."
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (default: the run's recipe)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale s."),
    eta: Optional[float] = typer.Option(None, "--eta", help="DDIM eta (0: deterministic DDIM)."),
    spacing: Optional[str] = typer.Option(
        None, "--timestep-spacing", help="trailing, leading or linspace (default: the recipe's sample.timestep_spacing)."
    ),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="auto (bf16 where the device computes it natively), bf16, fp16 or fp32."
    ),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Use the EMA weights (default: the recipe's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per batch (does not change the images)."),
    force: bool = typer.Option(False, "--force", help="Replace images of another checkpoint or settings in --out."),
    filter_with: Optional[Path] = typer.Option(
        None, "--filter-with", help="Classifier (folder or run) trained on real data: keep images it grades close."
    ),
    max_grade_error: Optional[int] = typer.Option(
        None, "--max-grade-error", help="With --filter-with: largest accepted |predicted - intended| grade."
    ),
    compile: Optional[bool] = typer.Option(
        None, "--compile/--no-compile",
        help="torch.compile the network (default: the recipe's sample.compile, auto = when the job is big enough).",
    ),
    grid: bool = typer.Option(True, "--grid/--no-grid", help="Write <out>/grid.png (8 images per grade)."),
    from_real: bool = typer.Option(
        False, "--from-real", help="Translate real TRAINING images of other grades (SDEdit) instead of pure noise."
    ),
    source_grades: Optional[str] = typer.Option(
        None, "--source-grades", help="With --from-real: grades to start from, e.g. 2,3, or auto (the next grades)."
    ),
    strength: Optional[float] = typer.Option(
        None, "--strength", help="With --from-real: t0 / T in (0, 1], default 0.6; 1 = from pure noise."
    ),
    device: Optional[str] = DeviceOption,
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """Synthesize new images of chosen grades from a trained generator: <out>/<grade>/<seed>.png + manifest.csv.

    Re-running resumes: valid images are kept, missing or damaged ones are made again, and the manifest is rebuilt
    from the files on disk. Over K processes the seeds are shared out over the ranks:

    torchrun --nproc_per_node K -m odmaug -- augment --run RUN --n N   (the -- keeps torchrun off --run and --n)
    """
    from odmaug.augment import GradeFilter, SamplingSettings, run_synthesis
    from odmaug.runs import open_run

    recipe = open_run(run).recipe()
    aug = recipe.augment
    if n is None and to_count is None:
        n, to_count = aug.n, aug.to_count  # the recipe's amounts only when none is given here
    if from_real and sampler is None and recipe.sample.sampler not in ("ddim", "ddpm"):
        sampler = "ddim"  # the multistep solvers cannot start mid-chain; DDIM is the SDEdit sampler here
    settings = SamplingSettings.from_config(
        recipe.sample, sampler=sampler, steps=steps, guidance_scale=guidance, eta=eta, precision=precision,
        timestep_spacing=spacing,
    )
    classifier = filter_with or aug.filter_with
    grade_filter = None
    if classifier is not None:
        grade_filter = GradeFilter(classifier, aug.max_grade_error if max_grade_error is None else max_grade_error)
    elif max_grade_error is not None:
        from odmaug.errors import OdmaugError

        raise OdmaugError("--max-grade-error needs --filter-with CLASSIFIER")
    summary = run_synthesis(
        run, out, target_class or aug.target_classes, n, to_count,
        aug.seed_start if seed_start is None else seed_start, settings,
        recipe.sample.use_ema if ema is None else ema, batch_size, force, device or recipe.device,
        str(data_dir) if data_dir else None, grade_filter, compile=compile,
        from_real=_from_real(from_real, strength, source_grades),
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(synthesis_table(summary))
    rate = f" ({summary.images_per_second:.1f} img/s)" if summary.generated else ""
    ranks = f" on {summary.world_size} ranks" if summary.world_size > 1 else ""
    ranks += " (torch.compile, compile time included)" if summary.compiled else ""
    console.print(
        f"generated {summary.generated} images in {summary.seconds:.1f} s{rate}{ranks}, checkpoint {summary.checkpoint_id}; "
        f"{summary.present} already there" + (f"; replaced {summary.removed} old images" if summary.removed else "")
    )
    if grid and summary.manifest_rows:
        console.print(f"wrote {write_grid(summary.manifest, summary.out_dir / 'grid.png')}")
    console.print(f"wrote {summary.manifest} ({summary.manifest_rows} images)")


def _from_real(on: bool, strength: Optional[float], source_grades: Optional[str]):
    """The ``--from-real`` settings (None without it); its options alone are an error, not ignored."""
    from odmaug.augment.from_real import FromReal
    from odmaug.errors import OdmaugError

    if not on:
        if strength is not None or source_grades is not None:
            raise OdmaugError("--strength and --source-grades need --from-real")
        return None
    return FromReal(0.6 if strength is None else strength, source_grades or "auto")
