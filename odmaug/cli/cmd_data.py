"""``odmaug data info``: images per grade and split, the imbalance ratio, and an example grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from odmaug.atomic import check_writable
from odmaug.cli.app import data_app
from odmaug.cli.options import RecipeOptions, recipe_options
from odmaug.console import console
from odmaug.data import ImageTable, load_table, table_from_spec
from odmaug.data.sources import counts_by_split


def counts_table(table: ImageTable) -> Table:
    """A rich table: one row per split, one column per grade, total, imbalance ratio and the
    number of patient groups (``-``: the rows have none)."""
    out = Table(title=f"{table.name}: images per grade", title_justify="left")
    out.add_column("split")
    for g in range(table.num_classes):
        out.add_column(f"grade {g}", justify="right")
    out.add_column("total", justify="right")
    out.add_column("imbalance", justify="right")
    out.add_column("groups", justify="right")
    for split, counts in counts_by_split(table).items():
        nonzero = counts[counts > 0]
        ratio = f"{counts.max() / nonzero.min():.1f}" if len(nonzero) == len(counts) else "inf"
        groups = table.frame.loc[table.frame["split"] == split, "group"].dropna()
        out.add_row(split, *[str(c) for c in counts], str(counts.sum()), ratio, str(groups.nunique()) if len(groups) else "-")
    return out


def group_summary(table: ImageTable) -> str:
    """One line: are the splits grouped by patient, and does any group straddle two splits?"""
    groups = table.frame["group"]
    if groups.isna().all():
        return "splits not grouped: no patient groups, so one patient's images may be in several splits"
    known = table.frame[groups.notna()]
    per_group = known.groupby("group")["split"].nunique()
    straddle = per_group[per_group > 1]
    partly = f", {int(groups.isna().sum())} rows without a group" if groups.isna().any() else ""
    if len(straddle):
        return (f"splits NOT grouped: {len(straddle)} of {len(per_group)} patient groups straddle splits "
                f"(e.g. {straddle.index[0]}){partly}")
    return f"splits grouped by patient: {len(per_group)} groups, none in two splits{partly}"


@data_app.command("info")
@recipe_options("recipe", "overrides", "data_dir")
def info(
    options: RecipeOptions,
    source: Annotated[Optional[str], typer.Option(
        "--source", help="Instead of the recipe's data: retinamnist, synthetic, a folder root/<grade>/*.png, or a "
        "manifest .csv (without a split column: split as the recipe would); add :train/:val/:test for one split.")] = None,
    grid: Annotated[Optional[Path], typer.Option(
        "--grid", help="Save a PNG grid of examples, one row per grade.")] = None,
    per_grade: Annotated[int, typer.Option("--per-grade", min=1, max=64, help="Examples per grade in the grid.")] = 8,
    split: Annotated[str, typer.Option("--split", help="Split the grid draws from.")] = "train",
) -> None:
    """Print images per grade and split with the imbalance ratio; optionally save an example grid."""
    from odmaug.data.examples import example_grid

    cfg = options.load()
    if grid is not None:
        check_writable(grid)  # before the data is read
    # A folder or manifest without splits is shown split as the recipe would split it; one too small
    # for that is still counted (all train), so that this command can describe any set.
    # Counting reads no image: a set with missing files is still described (commands that train refuse it).
    table = (table_from_spec(source, cfg.data, draw_splits="if-possible", check_images=False) if source
             else load_table(cfg.data, check_images=False))
    console.print(counts_table(table))
    console.print(group_summary(table), highlight=False)
    absent = [g for g, n in enumerate(table.counts().tolist()) if n == 0]
    if absent:  # a row of zeros is easy to miss: a recipe using this data stops with an error
        console.print(f"no images at all of grade {', '.join(map(str, absent))}", highlight=False)
    if source and table.splits() == ["train"] and cfg.data.val_fraction + cfg.data.test_fraction > 0:
        console.print("only a train split: the source gives only train rows, or is too small to draw the "
                      "recipe's val/test splits (then a recipe using it as data stops with an error)", highlight=False)
    if grid is not None:
        console.print(f"wrote {example_grid(table, split, grid, per_grade, cfg.image_size('data'), cfg.data.crop_box, cfg.seed)}")
