"""``odmaug augment`` (synthesize scarce grades) and ``odmaug balance`` (merge into a balanced set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import pandas as pd
import typer
from rich.table import Table

from odmaug.cli.app import app
from odmaug.cli.options import GeneratorRunOption, RecipeOptions, recipe_options, sample_options
from odmaug.console import console, is_main_process, warn
from odmaug.data.balance import STRATEGIES


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
@recipe_options("recipe", "overrides", "data_dir")
def balance_command(
    options: RecipeOptions,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Balanced manifest CSV to write, e.g. runs/X/datasets/odm.csv.")],
    synthetic: Annotated[Optional[List[str]], typer.Option(
        "--synthetic", help="Synthetic manifest .csv (or folder <grade>/*.png) to draw from (repeatable).")] = None,
    strategy: Annotated[Optional[str], typer.Option(
        "--strategy", help=f"{' | '.join(STRATEGIES.names())} (default: the recipe's augment.strategy).")] = None,
    to_count: Annotated[Optional[int], typer.Option(
        "--to-count", help="Training images per grade (to-count, oversample).")] = None,
    max_share: Annotated[Optional[float], typer.Option(
        "--max-synthetic-share", help="Cap on the share of added images per grade, in (0, 1].")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the picks (default: the recipe's seed).")] = None,
) -> None:
    """Merge the recipe's real data with synthetic manifests (or real repeats) into one balanced manifest.

    Real images are never dropped; validation and test rows stay the real ones. Prints the
    per-grade counts before and after, and warns when a grade cannot reach its target.
    """
    from dataclasses import replace

    from odmaug.commands.augment import balance_with_options

    done = balance_with_options(replace(options, seed=seed).load(), out, synthetic or (), strategy, to_count, max_share)
    console.print(balance_table(done.counts, done.strategy, f"{done.real_name} training split: {done.strategy}"))
    for line in done.shortfalls:
        warn(line)
    merged = done.table
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


@app.command("augment")
@recipe_options("device", "data_dir")
@sample_options()
def augment_command(
    run: GeneratorRunOption,
    sample: dict,
    options: RecipeOptions,
    target_class: Annotated[Optional[str], typer.Option("--target-class", "-c", help="Grade(s): 4, 3,4 or auto.")] = None,
    n: Annotated[Optional[int], typer.Option("--n", help="Images per chosen grade.")] = None,
    to_count: Annotated[Optional[int], typer.Option("--to-count", help="Fill each chosen grade up to M images.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default <run>/synthetic).")] = None,
    seed_start: Annotated[Optional[int], typer.Option("--seed-start", help="First seed of every grade.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace images of another checkpoint or settings.")] = False,
    filter_with: Annotated[Optional[Path], typer.Option("--filter-with", help="Classifier that grades them.")] = None,
    max_grade_error: Annotated[Optional[int], typer.Option("--max-grade-error", help="Largest accepted error.")] = None,
    grid: Annotated[bool, typer.Option("--grid/--no-grid", help="Write <out>/grid.png (8 images per grade).")] = True,
    from_real: Annotated[bool, typer.Option("--from-real", help="Translate real training images (SDEdit).")] = False,
    source_grades: Annotated[Optional[str], typer.Option("--source-grades", help="Grades to start from.")] = None,
    strength: Annotated[Optional[float], typer.Option("--strength", help="t0 / T in (0, 1] (default augment.strength).")] = None,
) -> None:
    """Synthesize new images of chosen grades from a trained generator: <out>/<grade>/<seed>.png + manifest.csv.

    --target-class auto takes every grade below the target count; --to-count M fills each chosen grade up to M
    images, counting the real training images (with neither --n nor --to-count: up to the largest grade).
    --filter-with CLASSIFIER (trained on real data) keeps the images it grades within --max-grade-error of
    their grade. --from-real translates real TRAINING images of other grades (--source-grades, default the next
    grades; --strength, 1 = from pure noise) instead of sampling from pure noise. Options left out take the
    run's recipe values (its augment and sample sections).

    Re-running resumes: valid images are kept, missing or damaged ones are made again, and the manifest is
    rebuilt from the files on disk. Over K processes the seeds are shared out over the ranks:

    torchrun --nproc_per_node K -m odmaug -- augment --run RUN --n N   (the -- keeps torchrun off --run and --n)
    """
    from odmaug.commands.augment import run_synthesis_with_options, write_grid

    summary = run_synthesis_with_options(
        run, out=out, target_classes=target_class, n=n, to_count=to_count, seed_start=seed_start, force=force,
        device=options.device, data_dir=options.data_dir, filter_with=filter_with, max_grade_error=max_grade_error,
        from_real=from_real, source_grades=source_grades, strength=strength, sample=sample,
    )
    if not is_main_process():  # rank 0 reports for every rank
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
