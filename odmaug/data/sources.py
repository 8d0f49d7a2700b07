"""Build an :class:`ImageTable` from a recipe's ``data`` section or a path given on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from odmaug.config import DataConfig
from odmaug.data import retinamnist
from odmaug.console import warn
from odmaug.data.splits import assign_splits, split_warnings
from odmaug.data.synthetic import synthetic_labels
from odmaug.data.table import (
    RETINAMNIST_SCHEME,
    SYNTHETIC_SCHEME,
    ImageTable,
    resolve_path,
    validate_labels,
)
from odmaug.errors import OdmaugError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def retinamnist_table(data_dir: str | None = None) -> ImageTable:
    """RetinaMNIST with its official train/val/test splits."""
    frames = []
    for split in retinamnist.SPLITS:
        _, labels = retinamnist.load_split(split, data_dir)
        frames.append(
            pd.DataFrame(
                {
                    "path": [f"{RETINAMNIST_SCHEME}{split}/{i}" for i in range(len(labels))],
                    "label": labels,
                    "split": split,
                }
            )
        )
    return ImageTable(pd.concat(frames, ignore_index=True), 5, "retinamnist", data_dir)


def synthetic_table(cfg: DataConfig) -> ImageTable:
    """The built-in synthetic ordinal dataset, split deterministically."""
    syn = cfg.synthetic
    labels = synthetic_labels(syn.counts)
    paths = [f"{SYNTHETIC_SCHEME}{syn.native_size}/{syn.seed}/{i}/{g}" for i, g in enumerate(labels)]
    frame = pd.DataFrame({"path": paths, "label": labels})
    frame["split"] = _split_column(labels, None, cfg)
    return ImageTable(frame, cfg.num_classes, "synthetic")


def folder_table(root: str | Path, num_classes: int) -> pd.DataFrame:
    """Rows of an image folder ``root/<grade>/*.png|jpg|jpeg`` (no split column)."""
    root = Path(root)
    if not root.is_dir():
        raise OdmaugError(f"image folder not found: {root}")
    rows = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not sub.name.isdigit():
            raise OdmaugError(f"{sub}: folder name '{sub.name}' is not an integer grade")
        grade = int(sub.name)
        if grade >= num_classes:
            raise OdmaugError(f"{sub}: grade {grade} is outside 0..{num_classes - 1}")
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rows += [{"path": str(p.resolve()), "label": grade} for p in files]
    if not rows:
        raise OdmaugError(f"{root}: no images found (expected {root}/<grade>/*.png|jpg|jpeg)")
    return pd.DataFrame(rows)


def read_manifest(path: str | Path, num_classes: int) -> pd.DataFrame:
    """Rows of a CSV manifest (``path,label`` plus optional ``split``, ``group``, ``source``...)."""
    path = Path(path)
    if not path.is_file():
        raise OdmaugError(f"manifest not found: {path}")
    try:
        frame = pd.read_csv(path, dtype={"path": str, "split": str, "group": str, "source": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise OdmaugError(f"{path}: not a readable CSV manifest ({str(err).splitlines()[0]})") from None
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise OdmaugError(f"{path}: manifest lacks column(s) {', '.join(sorted(missing))}")
    if frame.empty:
        raise OdmaugError(f"{path}: manifest has no rows")
    base = path.parent
    frame["path"] = [resolve_path(p, base, str(path)) for p in frame["path"]]
    frame["label"] = validate_labels(frame["label"], num_classes, str(path))
    if "split" in frame.columns:
        bad = sorted(set(frame["split"].dropna()) - {"train", "val", "test"})
        if bad:
            raise OdmaugError(f"{path}: unknown split '{bad[0]}' (use train, val or test)")
    return frame


def _with_splits(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    if "split" in frame.columns and frame["split"].notna().all():
        return frame
    groups = frame["group"].to_numpy() if "group" in frame.columns and frame["group"].notna().all() else None
    frame = frame.copy()
    frame["split"] = _split_column(frame["label"].to_numpy(), groups, cfg)
    return frame


def _split_column(labels: np.ndarray, groups: np.ndarray | None, cfg: DataConfig) -> np.ndarray:
    """Stratified split names per row, shape (N,); one warning line per grade a requested split lacks."""
    splits = assign_splits(labels, groups, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    for line in split_warnings(labels, splits, cfg.val_fraction, cfg.test_fraction, groups):
        warn(line)
    return splits


def load_table(cfg: DataConfig) -> ImageTable:
    """Every split of the recipe's data source as one table.

    Raises:
        OdmaugError: missing or unreadable paths, bad labels, escaping manifest paths, a grade
            with no images in the training split, a set too small for the asked val/test splits.
    """
    if cfg.source == "retinamnist":
        if cfg.num_classes != 5:
            raise OdmaugError("RetinaMNIST has 5 grades: set data.num_classes to 5")
        table = retinamnist_table(cfg.data_dir)
    elif cfg.source == "synthetic":
        table = synthetic_table(cfg)
    elif cfg.source == "folder":
        frame = _with_splits(folder_table(cfg.path, cfg.num_classes), cfg)
        table = ImageTable(frame, cfg.num_classes, Path(cfg.path).name)
    else:
        frame = _with_splits(read_manifest(cfg.path, cfg.num_classes), cfg)
        table = ImageTable(frame, cfg.num_classes, Path(cfg.path).stem, cfg.data_dir)
    table.split("train").require_every_grade()
    return table


def table_from_spec(spec: str, cfg: DataConfig) -> ImageTable:
    """A table from a command-line spec: ``recipe``, a folder, a ``.csv`` manifest, ``retinamnist``
    or ``synthetic``, optionally ``spec:split`` to keep one split (e.g. ``retinamnist:test``)."""
    split = None
    head, sep, tail = spec.rpartition(":")
    if sep and tail in ("train", "val", "test") and head:
        spec, split = head, tail
    if spec == "recipe":
        table = load_table(cfg)
    elif spec in ("retinamnist", "synthetic"):
        table = load_table(cfg.model_copy(update={"source": spec, "num_classes": 5 if spec == "retinamnist" else cfg.num_classes}))
    else:
        path = Path(spec)
        if path.suffix.lower() == ".csv":
            frame = read_manifest(path, cfg.num_classes)
            frame = frame if "split" in frame.columns and frame["split"].notna().all() else frame.assign(split="train")
            table = ImageTable(frame, cfg.num_classes, path.stem, cfg.data_dir)
        else:
            table = ImageTable(folder_table(path, cfg.num_classes).assign(split="train"), cfg.num_classes, path.name)
    if split:
        table = table.split(split)
        if len(table) == 0:
            raise OdmaugError(f"{spec}: split '{split}' is empty")
    return table


def counts_by_split(table: ImageTable) -> dict[str, np.ndarray]:
    """Images per grade for each split present."""
    return {s: table.split(s).counts() for s in table.splits()}
