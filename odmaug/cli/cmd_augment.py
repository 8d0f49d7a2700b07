"""``odmaug augment`` (synthesize scarce grades) and ``odmaug balance`` (merge into a balanced set)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pandas as pd
import typer
from rich.table import Table

from odmaug.cli.app import DataDirOption, RecipeOption, SetOption, app, recipe_from_options
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
