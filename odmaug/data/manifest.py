"""Tables from a folder (``root/<grade>/<image>``) or a CSV manifest: reading, checking, splitting.

The ``folder`` and ``manifest`` data sources (:mod:`odmaug.data.sources`) and every command-line
path spec read their rows here. A set without a ``split`` column gets a stratified split, grouped by
patient where groups are known (``group`` column, ``data.group_pattern`` or ``data.group_from``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from odmaug.config import DataConfig
from odmaug.console import warn, warn_once
from odmaug.data.decode_cache import resolve_cache_dir
from odmaug.data.checks import groups_from_pattern, warn_aspect, warn_no_groups, warn_small_splits
from odmaug.data.dicom import groups_from_tag
from odmaug.data.listing import folder_table
from odmaug.data.splits import assign_splits, split_warnings
from odmaug.data.table import ImageTable, resolve_path, validate_labels
from odmaug.data.verify import check_images as verify_images
from odmaug.errors import OdmaugError


def read_manifest(path: str | Path, num_classes: int) -> pd.DataFrame:
    """Rows of a CSV manifest (``path,label`` plus optional ``split``, ``group``, ``source``...).

    Rows are numbered from 1 after the header in messages. Exact duplicate rows are dropped with a
    warning (``source=oversampled`` rows are deliberate repeats and stay).

    Raises:
        OdmaugError: missing file or columns, no rows, unreadable CSV, a blank path, a bad label, a
            path escaping the manifest's folder, an unknown split, a ``split`` or ``group`` column
            blank in some rows only (``group`` only matters, and is checked, when splits are
            drawn), or one image listed with two different labels.
    """
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
    # A cell of spaces is as blank as an empty one: stripped, it named the manifest's own folder
    # (and a NaN cell once read as the file ".../nan") in the error about the "image" that followed.
    frame["path"] = frame["path"].str.strip().replace("", np.nan)
    _check_blank_cells(frame, "path", path)
    base = path.parent
    frame["path"] = [resolve_path(p, base, str(path)) for p in frame["path"]]
    frame["label"] = validate_labels(frame["label"], num_classes, str(path))
    if "split" in frame.columns:
        bad = sorted(set(frame["split"].dropna()) - {"train", "val", "test"})
        if bad:
            raise OdmaugError(f"{path}: unknown split '{bad[0]}' (use train, val or test)")
        _check_blank_cells(frame, "split", path)
    if "group" in frame.columns and not ("split" in frame.columns and frame["split"].notna().all()):
        _check_blank_cells(frame, "group", path)
    return _check_duplicates(frame, path)


def _rows(positions) -> str:
    """``row 3`` or ``rows 3, 8`` (1 = first row after the header): at most five, then a count."""
    numbers = [str(int(i) + 1) for i in positions]
    more = f" and {len(numbers) - 5} more" if len(numbers) > 5 else ""
    return ("row " if len(numbers) == 1 else "rows ") + ", ".join(numbers[:5]) + more


def _check_blank_cells(frame: pd.DataFrame, column: str, path: Path) -> None:
    """A column blank in some rows but not all is an error naming them.

    A wholly blank ``split`` or ``group`` column means "not given" (odmaug writes an empty
    ``group`` column itself); a partly blank one would silently draw new splits for every row, or
    turn patient grouping off for every row, so it is refused instead.
    """
    blank = frame[column].isna().to_numpy()
    if not blank.any() or (blank.all() and column != "path"):
        return
    fix = {"path": "every row needs an image", "split": "fill in train, val or test, or drop the column",
           "group": "fill them in, or drop the column to split without groups"}[column]
    raise OdmaugError(f"{path}: blank '{column}' in {_rows(np.flatnonzero(blank))} ({fix})")


def _check_duplicates(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Refuse an image listed with two labels; drop exact repeats (one warning with their count)."""
    labels = frame.groupby("path", sort=False)["label"].nunique()
    if (labels > 1).any():
        image = labels.index[labels > 1][0]
        rows = np.flatnonzero(frame["path"].to_numpy() == image)
        shown = ", ".join(f"{frame['label'].iat[i]} (row {i + 1})" for i in rows[:5])
        raise OdmaugError(f"{path}: image {image} is listed with different labels: {shown}")
    repeats = frame.duplicated(keep="first")
    if "source" in frame.columns:
        repeats &= frame["source"].ne("oversampled")
    if repeats.any():
        warn(f"{path}: {int(repeats.sum())} exact duplicate row(s) dropped ({_rows(np.flatnonzero(repeats))})")
        frame = frame[~repeats].reset_index(drop=True)
    return frame


def _has_splits(frame: pd.DataFrame) -> bool:
    """Whether the source gives every row's split itself."""
    return "split" in frame.columns and bool(frame["split"].notna().all())


def _with_splits(frame: pd.DataFrame, cfg: DataConfig, origin: str) -> pd.DataFrame:
    """``frame`` with its own splits, or with drawn ones, grouped by patient where groups are known.

    Groups come from the ``group`` column, from ``data.group_pattern`` or from ``data.group_from``
    (a DICOM tag, hashed; either is then written to the ``group`` column); without any the split is per image (:func:`check_table` says so).

    Raises:
        OdmaugError: both a ``group`` column and ``data.group_pattern``; a file name the pattern
            misses. TooFewToSplit: a set too small for the asked splits.
    """
    if _has_splits(frame):
        return frame
    frame = frame.copy()
    given = "group" in frame.columns and bool(frame["group"].notna().all())
    derived = cfg.group_pattern or cfg.group_from
    if derived and given:
        setting = "data.group_pattern" if cfg.group_pattern else "data.group_from"
        raise OdmaugError(f"{origin}: the manifest has a 'group' column and {setting} is set: use one of them")
    if cfg.group_pattern:
        frame["group"] = groups_from_pattern(frame["path"].tolist(), cfg.group_pattern, origin)
    elif cfg.group_from:
        frame["group"] = groups_from_tag(frame["path"].tolist(), cfg.group_from, origin)
    groups = frame["group"].to_numpy() if derived or given else None
    try:
        frame["split"] = split_column(frame["label"].to_numpy(), groups, cfg)
    except OdmaugError as err:  # assign_splits raises only for a set too small for the asked splits
        raise TooFewToSplit(str(err)) from None
    return frame


class TooFewToSplit(OdmaugError):
    """A folder or manifest too small for the asked val/test splits (every grade keeps train images)."""


def check_table(table: ImageTable, cfg: DataConfig, origin: str, drawn: bool | None, images: bool) -> None:
    """Warnings (once per command) about a loaded folder or manifest, given once it proved valid
    (with ``images``: once every image was checked, :func:`odmaug.data.verify.check_images`).

    Says when splits were drawn without patient groups, when images are non-square or vary in
    shape and would be squashed, and, unless ``drawn`` is None (splits neither given nor drawn),
    which splits have few images of a grade.
    """
    if images:
        verify_images(table)
    if drawn and table.frame["group"].isna().all():
        warn_no_groups(origin)
    if cfg.crop == "none" and cfg.crop_box is None:
        warn_aspect(table.frame, origin)
    if drawn is not None:
        warn_small_splits(table.frame, cfg.num_classes, cfg.min_split_images, origin, skip_empty=drawn)


def split_column(labels: np.ndarray, groups: np.ndarray | None, cfg: DataConfig) -> np.ndarray:
    """Stratified split names per row, shape (N,); one warning line per grade a requested split lacks."""
    splits = assign_splits(labels, groups, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    for line in split_warnings(labels, splits, cfg.val_fraction, cfg.test_fraction, groups):
        warn_once(line)
    return splits


def path_table(path: Path, cfg: DataConfig, draw: bool | str) -> tuple[ImageTable, bool | None]:
    """A folder or ``.csv`` manifest with the recipe's crop and decode cache, and whether its splits
    were drawn (True), given (False) or neither (None: all rows ``train``).

    Without a split column, splits are drawn if ``draw`` (``"if-possible"``: unless the set is too
    small for them), else every row is ``train``.
    """
    if path.suffix.lower() == ".csv":
        frame, name, data_dir = read_manifest(path, cfg.num_classes), path.stem, cfg.data_dir
    else:
        frame, name, data_dir = folder_table(path, cfg.num_classes), path.name, None
    drawn = False if _has_splits(frame) else None
    if drawn is None and draw:
        try:
            frame, drawn = _with_splits(frame, cfg, str(path)), True
        except TooFewToSplit:
            if draw != "if-possible":
                raise
    if drawn is None:
        frame = frame.assign(split="train")
    cache = resolve_cache_dir(cfg.cache, cfg.cache_dir)
    return ImageTable(frame, cfg.num_classes, name, data_dir, cfg.crop, cache), drawn
