"""Which images a classifier trains, selects and is tested on."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from odmaug.config import Recipe
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError


def check_splits(recipe: Recipe, train: ImageTable, val: ImageTable, test: Optional[ImageTable]) -> None:
    """Empty splits, grades outside the recipe's range, or a grade with no training image: errors."""
    num_classes = recipe.data.num_classes
    for name, table in (("training", train), ("validation", val), ("test", test)):
        if table is None:
            continue
        if len(table) == 0:
            raise OdmaugError(f"the {name} split is empty ({table.name})")
        top = int(table.labels.max())
        if top >= num_classes:
            raise OdmaugError(f"{table.name}: grade {top} in the {name} split, but the classifier has grades 0..{num_classes - 1}")
    train.require_every_grade("classifier's training split")


def training_splits(recipe: Recipe, manifest: Optional[str | Path] = None) -> tuple[ImageTable, ImageTable, Optional[ImageTable]]:
    """(train, val, test) for a classifier: the recipe's dataset, or a manifest's training rows.

    A manifest's own val/test rows are used when it has them, otherwise the recipe's (real) val
    and test splits. A missing test split gives None; a missing validation split is an error
    (model selection needs one).
    """
    from odmaug.data import load_table, table_from_spec

    recipe_table: Optional[ImageTable] = None

    def recipe_split(name: str) -> ImageTable:
        nonlocal recipe_table
        if recipe_table is None:
            recipe_table = load_table(recipe.data)
        return recipe_table.split(name)

    if manifest is None:
        train = recipe_split("train")
        val, test = recipe_split("val"), recipe_split("test")
    else:
        table = table_from_spec(str(manifest), recipe.data)
        train = table.split("train")
        if len(train) == 0:
            raise OdmaugError(f"{manifest}: no training rows (split=train)")
        own = set(table.splits())
        val = table.split("val") if "val" in own else recipe_split("val")
        test = table.split("test") if "test" in own else recipe_split("test")
    if len(val) == 0:
        raise OdmaugError(f"no validation images for model selection ({val.name} is empty)")
    return train, val, (test if len(test) else None)
